"""Analyses of exported embeddings, on small hand-made embeddings whose right
answers are known by construction or by hand."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from astrom3_jax.analysis import (
    _common,
    classify,
    maps,
    mislabels,
    outliers,
    report,
    similarity,
    store,
)

CLASS_NAMES = ["A", "M", "ROT"]
MODALITIES = ("photometry", "spectra", "metadata")
DIM = 12


def _unit(x):
    x = np.asarray(x, float)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _object_vectors(true_class, subtype, rng, noise=0.02):
    """Class direction e_c, a subtype offset, small noise (per modality)."""
    offsets = {"carbon": 5, "oxygen": 6, "dwarf": 7, "giant": 8, "": None}
    x = np.zeros((len(true_class), DIM))
    for i, (c, s) in enumerate(zip(true_class, subtype, strict=True)):
        x[i, c] = 1.0
        if offsets[s] is not None:
            x[i, offsets[s]] = 0.6
    return x + rng.normal(0, noise, x.shape)


def _split(rng, n_per_class, split, *, mislabel_rows=(), unseen=False):
    if unseen:
        true = np.full(n_per_class, 9)
        labels = np.zeros(n_per_class, int)
        subtype = np.full(n_per_class, "")
        truth = np.full(n_per_class, "NEW")
    else:
        true = np.repeat(np.arange(3), n_per_class)
        subtype = np.full(len(true), "", dtype=object)
        m, r = np.flatnonzero(true == 1), np.flatnonzero(true == 2)
        subtype[m] = np.where(np.arange(len(m)) % 2, "carbon", "oxygen")
        subtype[r] = np.where(np.arange(len(r)) % 2, "dwarf", "giant")
        subtype = subtype.astype(str)
        labels = true.copy()
        for row in mislabel_rows:  # planted: a true-ROT object labelled A
            assert true[row] == 2
            labels[row] = 0
        truth = np.asarray(CLASS_NAMES)[true]
    n = len(true)
    emb = {m: _object_vectors(true, subtype, rng) for m in MODALITIES}
    index = {
        "id": np.array([f"{split}-{i}" for i in range(n)]),
        "name": np.array([f"star {split} {i}" for i in range(n)]),
        "label": labels,
        "true_target": truth,
        "subtype": subtype,
    }
    return emb, index


MISLABEL_ROW = 25  # a true ROT object in the train split (rows 20..29)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """train/val/test/unseen export: 3 classes, 1 planted mislabel in train."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        rows = (MISLABEL_ROW,) if split == "train" else ()
        emb, index = _split(rng, n, split, mislabel_rows=rows)
        store.save_split(root, split, embeddings=emb, index=index)
    emb, index = _split(rng, 5, "unseen", unseen=True)
    store.save_split(root, "unseen", embeddings=emb, index=index)
    store.write_manifest(
        root,
        splits=["train", "val", "test", "unseen"],
        modalities=list(MODALITIES),
        class_names=CLASS_NAMES,
        embed_dim=DIM,
        step=np.int64(7),
    )
    return root


# --- store -------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    emb = {
        "spectra": rng.normal(size=(5, 4)),
        "photometry": 3 * rng.normal(size=(5, 4)),
    }
    index = {
        "id": ["e", "d", "c", "b", "a"],
        "name": np.array(["n0", "n1", "n2", "n3", "n4"], dtype=object),
        "label": np.array([2, 0, 1, 1, 0], np.int32),
        "subtype": ["", "x", "", "y", ""],
        "extra": np.arange(5.0),
    }
    logits = rng.normal(size=(5, 3))
    store.save_split(tmp_path, "test", embeddings=emb, index=index, logits=logits)
    store.write_manifest(tmp_path, class_names=["p", "q", "r"], step=np.int64(3))
    split = store.load_split(tmp_path, "test")

    assert split.modalities == ["photometry", "spectra"]  # sorted: no manifest list
    assert list(split.embeddings) == ["photometry", "spectra", "fused"]
    for m in ("spectra", "photometry"):
        got = split.embeddings[m]
        assert got.dtype == np.float32
        want = emb[m] / np.linalg.norm(emb[m], axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    fused = np.mean([_unit(emb["spectra"]), _unit(emb["photometry"])], axis=0)
    np.testing.assert_allclose(split.embeddings["fused"], fused, atol=1e-6)
    assert np.all(np.linalg.norm(split.embeddings["fused"], axis=1) < 1.0)
    np.testing.assert_allclose(split.unit("fused"), _unit(fused), atol=1e-6)
    assert split.index["id"].tolist() == ["e", "d", "c", "b", "a"]
    assert split.index["id"].dtype.kind == "U"
    assert split.index["label"].dtype == np.int64
    assert split.labels.tolist() == [2, 0, 1, 1, 0]
    assert split.label_names.tolist() == ["r", "p", "q", "q", "p"]
    np.testing.assert_array_equal(split.index["extra"], np.arange(5.0))
    np.testing.assert_allclose(split.logits, logits, rtol=1e-6)
    assert split.logits.dtype == np.float32
    assert store.read_manifest(tmp_path) == {"class_names": ["p", "q", "r"], "step": 3}
    assert store.list_splits(tmp_path) == ["test"]


def test_save_split_rejects_bad_input(tmp_path):
    index = {"id": ["a", "b"], "name": ["x", "y"], "label": [0, 1]}
    good = np.eye(2)
    with pytest.raises(ValueError, match="'photometry'.*shape"):
        store.save_split(
            tmp_path, "t", embeddings={"photometry": np.eye(3)}, index=index
        )
    with pytest.raises(ValueError, match=r"non-finite value in row 1 \(object 'b'\)"):
        bad = np.array([[1.0, 0.0], [np.nan, 1.0]])
        store.save_split(tmp_path, "t", embeddings={"photometry": bad}, index=index)
    with pytest.raises(ValueError, match=r"row 0 \(object 'a'\) has zero norm"):
        zero = np.array([[0.0, 0.0], [1.0, 1.0]])
        store.save_split(tmp_path, "t", embeddings={"photometry": zero}, index=index)
    with pytest.raises(ValueError, match="column 'name' has shape"):
        short = dict(index, name=["x"])
        store.save_split(tmp_path, "t", embeddings={"photometry": good}, index=short)
    with pytest.raises(ValueError, match="lacks column"):
        store.save_split(
            tmp_path, "t", embeddings={"photometry": good}, index={"id": ["a", "b"]}
        )
    with pytest.raises(ValueError, match="reserved"):
        store.save_split(tmp_path, "t", embeddings={"fused": good}, index=index)
    store.save_split(tmp_path, "t", embeddings={"photometry": good}, index=index)
    store.write_manifest(tmp_path, class_names=["only"])
    with pytest.raises(ValueError, match="label 1 of object 'b'"):
        store.load_split(tmp_path, "t")
    with pytest.raises(FileNotFoundError, match="no such split"):
        store.load_split(tmp_path, "val")


def test_missing_extra_names_the_install_command():
    with pytest.raises(ImportError, match=r"pip install -e '\.\[analysis\]'"):
        _common.require("no_such_module_for_astrom3", "testing")


# --- similarity --------------------------------------------------------------


def test_match_ranks_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = np.array([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    # query 0: cosines to b = 0.6 (own), 0, 1 -> one candidate beats it.
    np.testing.assert_array_equal(similarity.match_ranks(a, b), [1, 0, 0])
    got = similarity.retrieval_recall(a, b, ks=(1, 2))
    assert got["recall@1"] == pytest.approx(2 / 3)
    assert got["recall@2"] == 1.0
    assert got["median_rank"] == 1.0


def test_recall_identical_pairs_and_collapse():
    rng = np.random.default_rng(2)
    x = _unit(rng.normal(size=(40, 8)))
    rec = similarity.cross_modal_recall({"photometry": x, "spectra": x.copy()})
    assert rec["photometry->spectra"]["recall@1"] == 1.0
    assert rec["spectra->photometry"]["recall@5"] == 1.0
    same = np.tile(_unit(rng.normal(size=(1, 8))), (40, 1))
    collapsed = similarity.retrieval_recall(same, same.copy())
    assert collapsed["recall@1"] <= 1 / 40
    assert collapsed["recall@5"] <= 5 / 40


def test_top_k_neighbours_skips_the_query():
    x = _unit(np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]))
    idx, sims = similarity.top_k_neighbours(x[:1], x, 2, exclude=np.array([0]))
    np.testing.assert_array_equal(idx, [[1, 3]])
    np.testing.assert_allclose(sims, [[0.8, 0.6]])
    idx, _ = similarity.top_k_neighbours(x[:1], x, 2)
    np.testing.assert_array_equal(idx, [[0, 1]])


# --- classification ----------------------------------------------------------


def test_classifiers_perfect_on_separable_classes(export):
    train = store.load_split(export, "train")
    test = store.load_split(export, "test")
    results, predictions = classify.evaluate(train, test, k=3)
    assert set(results) == {*MODALITIES, "fused"}
    for key, per_method in results.items():
        for method in classify.METHODS:
            assert per_method[method]["accuracy"] == 1.0, (key, method)
            assert per_method[method]["accuracy_vs_truth"] == 1.0
            np.testing.assert_array_equal(predictions[key][method], test.labels)


def test_prototype_uses_class_centroids():
    train_x = _unit(np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.3, 1.0]]))
    train_y = np.array([4, 4, 7, 7])
    test_x = _unit(np.array([[1.0, 0.9], [1.0, 1.1]]))
    # centroid angles: class 4 ~ 5.6 deg, class 7 ~ 81.7 deg; the queries
    # lie at 42.0 and 47.7 deg, nearer 4 and 7 by half-angle 43.7 deg.
    got = classify.predict_prototype(train_x, train_y, test_x)
    np.testing.assert_array_equal(got, [4, 7])


def test_few_shot_samples_and_scores(export):
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    rows = classify.sample_per_class(labels, 2, np.random.default_rng(0))
    assert np.bincount(labels[rows]).tolist() == [2, 2, 2]
    # val has no planted mislabel (train's could be drawn as a shot).
    val = store.load_split(export, "val")
    test = store.load_split(export, "test")
    curves = classify.few_shot(val, test, shots=(1, 3), seeds=(0, 1), k=3)
    for per_method in curves.values():
        for method in classify.METHODS:  # 1-shot k-NN must use 1 neighbour
            for n in ("1", "3"):
                assert per_method[method][n]["values"] == [1.0, 1.0], (method, n)
                assert per_method[method][n]["mean"] == 1.0


# --- mislabels ---------------------------------------------------------------


def test_centroid_distance_leaves_the_object_out():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    y = np.array([0, 0, 0])
    loo = mislabels.centroid_distance(x, y, x, y, in_train=True)
    want0 = 1 - 0.6 / np.hypot(0.6, 1.8)  # centroid of rows 1, 2
    assert loo[0] == pytest.approx(want0)
    outside = mislabels.centroid_distance(x, y, x[:1], y[:1])
    assert outside[0] == pytest.approx(1 - 1.6 / np.hypot(1.6, 1.8))
    lone = mislabels.centroid_distance(x[:1], y[:1], x[:1], y[:1], in_train=True)
    assert np.isnan(lone[0])


def test_planted_mislabel_ranks_first(export, tmp_path):
    result = mislabels.run(export, tmp_path, k=1)
    assert result["n_planted"] == 1
    assert result["top_ids"] == [f"train-{MISLABEL_ROW}"]
    for key, v in result["scores"].items():
        assert v["precision@k"] == 1.0 and v["recall@k"] == 1.0, key
        assert v["average_precision"] == 1.0
    csv = (tmp_path / "mislabels.csv").read_text().splitlines()
    header = csv[0].split(",")
    first = dict(zip(header, csv[1].split(","), strict=True))
    assert first["id"] == f"train-{MISLABEL_ROW}" and first["planted"] == "True"
    assert first["n_modalities_top_k"] == "3" and first["rank_spectra"] == "1"
    assert len(csv) == 1 + 3 * (10 + 4 + 6)


C30 = np.sqrt(3) / 2
# Unit vectors in the plane, written exactly so that ties are exact: cos 90
# in floating point is not 0.
PLANE = {0: (1.0, 0.0), 30: (C30, 0.5), 60: (0.5, C30), 90: (0.0, 1.0)}
PLANE[180] = (-1.0, 0.0)


def _angles(*degrees):
    """Unit vectors in the plane at the given angles (those of PLANE)."""
    return np.array([PLANE[d] for d in degrees])


# Train rows at 0, 30, 90 and 180 degrees; cosines by hand (c = cos 30):
#   0:  30 -> c, 90 -> 0, 180 -> -1          60 (query): 0 -> 1/2
#   30: 0 -> c, 90 -> 1/2, 180 -> -c                     30 -> c, 90 -> c
#   90: 0 -> 0, 30 -> 1/2, 180 -> 0                      180 -> -1/2
#   180: 0 -> -1, 30 -> -c, 90 -> 0
HAND_TRAIN = (0, 30, 90, 180)


def test_knn_disagreement_by_hand():
    train_y = np.array([0, 0, 1, 2])
    neighbours = np.array([[0, 2, -1], [1, 3, 2], [-1, -1, -1], [0, 1, 2]])
    y = np.array([0, 2, 1, -1])
    got = mislabels.knn_disagreement(train_y, neighbours, y)
    # row 0: labels 0, 1 -> 1 of 2 agree; row 1: 0, 2, 1 -> 1 of 3 agree;
    # row 2: no neighbours; row 3: no label.
    np.testing.assert_allclose(got[:2], [1 - 1 / 2, 1 - 1 / 3])
    assert np.isnan(got[2]) and np.isnan(got[3])
    # With the 2 nearest: train (each without itself) 0 -> {30, 90},
    # 30 -> {0, 90}, 90 -> {30, 0 (tie with 180: train order)}, 180 -> {90,
    # 30}; the query at 60 degrees -> {30, 90}.
    x, ty = _angles(*HAND_TRAIN), np.array([0, 0, 1, 1])
    own = mislabels.knn_disagreement_of(x, ty, None, None, 2)
    np.testing.assert_allclose(own, [0.5, 0.5, 1.0, 0.5])
    q = mislabels.knn_disagreement_of(x, ty, _angles(60), np.array([1]), 2)
    np.testing.assert_allclose(q, [0.5])


def test_knn_mislabel_method_ranks_the_planted_mislabel_first(export, tmp_path):
    result = mislabels.run(export, tmp_path, k=1, method="knn", neighbours=5)
    assert result["method"] == "knn" and result["neighbours"] == 5
    assert result["top_ids"] == [f"train-{MISLABEL_ROW}"]
    assert mislabels.run(export, tmp_path / "c", k=1)["method"] == "centroid"
    with pytest.raises(ValueError, match="unknown mislabel method"):
        mislabels.run(export, tmp_path / "x", method="nearest")


def test_precision_recall_at_k_by_hand():
    scores = np.array([0.9, 0.1, 0.8, np.nan, 0.5])
    planted = np.array([True, True, False, False, False])
    got = mislabels.precision_recall_at_k(scores, planted, 2)
    assert got == {"precision": 0.5, "recall": 0.5}


# --- outliers ----------------------------------------------------------------


def test_planted_outlier_scores_highest():
    rng = np.random.default_rng(3)
    train = _unit(np.array([1.0, 0, 0, 0]) + rng.normal(0, 0.05, (60, 4)))
    test = _unit(np.array([1.0, 0, 0, 0]) + rng.normal(0, 0.05, (15, 4)))
    test[7] = _unit(np.array([0.0, 0.3, 1.0, 0.2]))
    for scores in (
        outliers.knn_distance(train, test, 5),
        outliers.isolation_forest(train, test, seed=0),
        outliers.local_outlier_factor(train, test, 10),
    ):
        assert np.argmax(scores) == 7
    # Train objects scored without themselves: a duplicate pair is at 0.
    dup = np.vstack([train[:5], train[:1]])
    self_free = outliers.knn_distance(dup, None, 1)
    assert self_free[0] == pytest.approx(0.0, abs=1e-9)
    assert self_free[1] > 1e-4


def test_knn_outlier_score_by_hand():
    x = _angles(*HAND_TRAIN)
    # The query at 60 degrees: nearest 30 and 90 (tie: train order).
    idx, cos, score = outliers.knn(x, _angles(60), 2)
    assert idx.tolist() == [[1, 2]]
    np.testing.assert_allclose(cos, [[C30, C30]])
    np.testing.assert_allclose(score, [1 - C30])
    # Each train row without itself (table above HAND_TRAIN).
    want_own = [1 - C30 / 2, 1 - (C30 + 0.5) / 2, 1 - 0.25, 1 + C30 / 2]
    own = outliers.knn_distance(x, None, 2)
    np.testing.assert_allclose(own, want_own)
    np.testing.assert_allclose(outliers.knn_distance(x, _angles(60), 2), score)
    # k larger than the rows there are: all of them (all others, left out).
    assert outliers.knn(x, None, 10)[0].shape == (4, 3)
    # 1 - C30 is below every own score; 0.75 is at or above 3 of the 4.
    pct = outliers.percentile_among(np.array([1 - C30, 0.75, 2.0]), own)
    np.testing.assert_allclose(pct, [0.0, 75.0, 100.0])


def test_unseen_cluster_auc():
    rng = np.random.default_rng(6)
    known = np.eye(3)[[0, 1]]
    train = _unit(np.repeat(known, 100, 0) + rng.normal(0, 0.15, (200, 3)))
    test = _unit(np.repeat(known, 20, 0) + rng.normal(0, 0.15, (40, 3)))
    unseen = _unit(np.eye(3)[2] + rng.normal(0, 0.05, (10, 3)))
    knn = outliers.unseen_auc(
        outliers.knn_distance(train, test), outliers.knn_distance(train, unseen)
    )
    lof = outliers.unseen_auc(
        outliers.local_outlier_factor(train, test),
        outliers.local_outlier_factor(train, unseen),
    )
    forest = outliers.unseen_auc(
        outliers.isolation_forest(train, test), outliers.isolation_forest(train, unseen)
    )
    assert knn == 1.0 and lof == 1.0 and forest > 0.95
    # AUC by hand: pairs (0.1, 0.3) right, (0.4, 0.3) wrong.
    assert outliers.unseen_auc(np.array([0.1, 0.4]), np.array([0.3])) == 0.5


def test_outliers_run_on_export(export, tmp_path):
    result = outliers.run(export, tmp_path, methods=outliers.METHODS)
    assert result["splits"] == ["test", "unseen"]
    aucs = result["unseen_vs_test_auc"]
    assert set(aucs) == {*MODALITIES, "fused"}
    for per_method in aucs.values():
        assert per_method["knn"] == 1.0  # unseen cluster is orthogonal to all
        assert set(per_method) == set(outliers.METHODS)
    assert result["top_ids_fused_knn"][0].startswith("unseen-")


# --- maps --------------------------------------------------------------------


def test_subtype_silhouettes(export):
    split = store.load_split(export, "train")
    sil = maps.subtype_silhouettes(split.unit("fused"), split.index["subtype"])
    assert sil["M:carbon/oxygen"]["n"] == {"carbon": 5, "oxygen": 5}
    assert sil["M:carbon/oxygen"]["silhouette"] > 0.9
    assert sil["ROT:dwarf/giant"]["silhouette"] > 0.9
    mixed = np.array(["carbon", "oxygen"] * 5)
    x = _unit(np.random.default_rng(4).normal(size=(10, 6)))
    assert maps.subtype_silhouettes(x, mixed)["M:carbon/oxygen"]["silhouette"] < 0.3
    one = np.array(["carbon"] + ["oxygen"] * 9)
    assert np.isnan(maps.subtype_silhouettes(x, one)["M:carbon/oxygen"]["silhouette"])


def test_pick_points_keeps_subtypes():
    subtypes = np.array(["", "carbon", "", "", "giant", ""] * 5)
    rows = maps.pick_points(subtypes, 12, seed=0)
    assert len(rows) == 12 and np.all(np.diff(rows) > 0)
    assert set(np.flatnonzero(subtypes != "")) <= set(rows)
    np.testing.assert_array_equal(maps.pick_points(subtypes, None, 0), np.arange(30))


def test_umap_keeps_clusters_apart():
    rng = np.random.default_rng(5)
    centres = np.eye(6)[[0, 3]]
    x = _unit(np.repeat(centres, 25, axis=0) + rng.normal(0, 0.03, (50, 6)))
    xy = maps.project_umap(x, n_neighbors=10, n_epochs=30, seed=0)
    assert xy.shape == (50, 2) and np.all(np.isfinite(xy))
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argmin(d, axis=1)
    assert np.all((nearest < 25) == (np.arange(50) < 25))


# --- command lines -----------------------------------------------------------


def test_similarity_cli(export, tmp_path, capsys):
    argv = ["--embeddings", str(export), "--out", str(tmp_path)]
    assert similarity.main([*argv, "--ids", "test-3", "--k", "2"]) == 0
    assert "photometry->spectra" in capsys.readouterr().out
    rec = json.loads((tmp_path / "retrieval.json").read_text())
    assert len(rec["retrieval"]) == 6  # ordered pairs of 3 modalities
    with (tmp_path / "neighbours.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4 * 2  # 4 x 4 embedding pairs, 2 neighbours each
    within = [r for r in rows if r["query_embedding"] == r["neighbour_embedding"]]
    assert len(within) == 8 and all(r["neighbour_id"] != "test-3" for r in within)
    # test-3 is class A (rows 0..5): its neighbours are class A too.
    assert {r["neighbour_label"] for r in rows} == {"A"}
    with pytest.raises(KeyError, match="no object with id 'nope'"):
        similarity.main([*argv, "--ids", "nope"])


def test_classify_cli(export, tmp_path, capsys):
    argv = ["--embeddings", str(export), "--out", str(tmp_path), "--k", "3"]
    assert classify.main([*argv, "--shots", "1", "2", "--seeds", "0"]) == 0
    assert "prototype" in capsys.readouterr().out
    got = json.loads((tmp_path / "classification.json").read_text())
    assert got["scores"]["fused"]["probe"]["accuracy"] == 1.0
    for name in ("classification.csv", "predictions.csv", "few_shot.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "few_shot.png").read_bytes()[:4] == b"\x89PNG"


def test_mislabels_and_outliers_cli(export, tmp_path, capsys):
    base = ["--embeddings", str(export)]
    assert mislabels.main([*base, "--out", str(tmp_path / "m"), "--k", "3"]) == 0
    assert outliers.main([*base, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "planted mislabels" in out and "ROC AUC" in out
    assert (tmp_path / "m" / "mislabels.csv").is_file()
    rows = (tmp_path / "o" / "outliers.csv").read_text().splitlines()
    assert len(rows) == 1 + 18 + 5


def test_maps_cli_with_pca(export, tmp_path, capsys):
    argv = ["--embeddings", str(export), "--out", str(tmp_path), "--projection", "pca"]
    assert maps.main([*argv, "--max-points", "40"]) == 0
    assert "silhouette" in capsys.readouterr().out
    for key in (*MODALITIES, "fused"):
        for kind in ("class", "subtype"):
            png = tmp_path / f"map_{key}_{kind}.png"
            assert png.read_bytes()[:4] == b"\x89PNG"
        assert len((tmp_path / f"map_{key}.csv").read_text().splitlines()) == 41
    sil = json.loads((tmp_path / "silhouettes.json").read_text())
    assert sil["silhouettes"]["fused"]["M:carbon/oxygen"]["silhouette"] > 0.9


def test_report_and_compare(export, tmp_path):
    kwargs = dict(shots=(1,), seeds=(0,), projection="pca", knn_k=3, mislabel_k=1)
    kwargs["outlier_methods"] = ("knn", "lof")
    summary = report.run(export, tmp_path / "a", **kwargs)
    assert summary["retrieval"]["spectra->metadata"]["recall@1"] <= 1.0
    assert summary["accuracy"]["fused"] == {"prototype": 1.0, "knn": 1.0, "probe": 1.0}
    assert summary["mislabels"]["fused"] == {"precision@k": 1.0, "recall@k": 1.0}
    knn = mislabels.run(export, tmp_path / "knn", k=1, method="knn")
    assert summary["mislabels_knn"]["n_planted"] == knn["n_planted"]
    for name, got in summary["mislabels_knn"].items():
        if isinstance(got, dict):
            assert got["precision@k"] == knn["scores"][name]["precision@k"]
    assert summary["unseen_auc"]["fused"].keys() == {"knn", "lof"}
    assert summary["unseen_auc"]["fused"]["knn"] == pytest.approx(1.0)
    assert summary["silhouette"]["fused"]["ROT:dwarf/giant"] > 0.9
    on_disk = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert on_disk["export"]["step"] == 7

    other = json.loads(json.dumps(on_disk))
    other["accuracy"]["fused"]["probe"] = 0.25
    other["silhouette"]["fused"]["M:carbon/oxygen"] = None
    silhouette = on_disk["silhouette"]["fused"]["M:carbon/oxygen"]
    (tmp_path / "b.json").write_text(json.dumps(other))
    result = subprocess.run(
        [sys.executable, "-m", "astrom3_jax.analysis.compare"]
        + [str(tmp_path / "a"), str(tmp_path / "b.json"), "--names", "pre", "rand"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "| metric | pre | rand | pre - rand |"
    assert "| accuracy.fused.probe | 1.000 | 0.250 | 0.750 |" in lines
    assert f"| silhouette.fused.M:carbon/oxygen | {silhouette:.3f} | - | - |" in lines
    assert not any(line.startswith("| export.") for line in lines)


def test_cli_prints_user_errors_as_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "astrom3_jax.analysis.mislabels"]
        + ["--embeddings", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'nowhere'}: export folder not found\n"
