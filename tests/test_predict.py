"""predict: a catalogue of raw files -> classes, embeddings, nearest known stars.

The dummy release is built and the release's own raw files are given to
`predict` as a catalogue in another folder layout: embeddings and classes
must equal what the release path (export, fine-tuning's test predictions)
gives for the same objects. The fast tests use small published-format
weights imported with the release's info.json (the statistics recorded at
import); the slow ones train a tiny CLIP model and a tiny fused classifier
on the built release (the runs record its statistics themselves).
"""

import csv
import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import scipy.special

import astrom3_jax
from astrom3_jax import (
    api,
    errors,
    export_embeddings,
    predict_lib,
    training,
)
from astrom3_jax.analysis import store
from astrom3_jax.data import (
    catalog,
    catalog_rows,
    catalog_tables,
    datasets,
    lightcurve_modes,
    normalisation,
    release_io,
    schema,
)
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.models import weights
from astrom3_jax.prediction import shards, writing
from astrom3_jax.training import calibration, calibration_files, reports
from tests.helpers.paths import DUMMY, ROOT
from tests.helpers.release import ASASSN_DAT_HEADER as HEADER
from tests.helpers.release import SPLIT_STEMS as STEMS
from tests.helpers.release import dummy_release_rows as _release_rows
from tests.helpers.release import read_csv_rows as _read_csv
from tests.helpers.release import write_catalog as _write_catalog
from tests.helpers.training import ft_config, tiny_config

INFO = os.path.join(DUMMY, "splits", "full", "42", "info.json")
WEIGHTS = os.path.join(ROOT, "tests", "fixtures", "reference_weights_small")
EXAMPLE = os.path.join(ROOT, "examples", "my_stars", "catalog.csv")
MODALITIES = ("photometry", "spectra", "metadata")
TOL = 1e-5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The dummy release's raw files in a layout of our own: light curves in
    <root>/survey/curves/, every spectrum flat in <root>/survey/lamost/
    (every other one gzipped), tables go in <root>/tables/."""
    root = tmp_path_factory.mktemp("stars")
    curves, spectra = root / "survey" / "curves", root / "survey" / "lamost"
    curves.mkdir(parents=True)
    spectra.mkdir()
    (root / "tables").mkdir()
    rows = _release_rows(*STEMS)
    with zipfile.ZipFile(os.path.join(DUMMY, "photometry.zip")) as z:
        for _, r in rows:
            (curves / f"{r['name']}.dat").write_bytes(
                z.read(release_io.dat_member(r["name"]))
            )
    for i, (_, r) in enumerate(rows):
        src = os.path.join(DUMMY, "spectra", r["target"], r["spec_filename"])
        if i % 2 and not src.endswith(".gz"):
            gz = spectra / f"{r['spec_filename']}.gz"
            with open(src, "rb") as f, gzip.open(gz, "wb") as g:
                g.write(f.read())
        else:
            shutil.copy(src, spectra / r["spec_filename"])
    return root


def _row(files, split, r, *, spectrum=True, metadata=True, absolute=False):
    """The catalogue row of a release object (catalogue cells copied as text,
    so the floats are exactly the release's)."""
    lamost = files / "survey" / "lamost"
    spec = lamost / r["spec_filename"]
    if not spec.exists():
        spec = lamost / f"{r['spec_filename']}.gz"
    lc = files / "survey" / "curves" / f"{r['name']}.dat"
    tables = files / "tables"
    out = {"id": r["id"], "name": r["name"], "label": r["target"]}
    out["lightcurve"] = str(lc) if absolute else os.path.relpath(lc, tables)
    out["spectrum"] = os.path.relpath(spec, tables) if spectrum else ""
    for c in schema.ALL_COLS:
        out[c] = r[c] if metadata or c in schema.PHOTO_COLS else ""
    return out


def _catalogue(files, name, rows):
    return _write_catalog(files / "tables" / name, rows)


@pytest.fixture(scope="module")
def clip_wd(data_dir, tmp_path_factory):
    """A tiny CLIP pre-training on the built release (one step): the run
    records the data set's statistics in its workdir."""
    wd = str(tmp_path_factory.mktemp("clip") / "run")
    c = tiny_config(dataset="full_42", data_dir=data_dir, num_epochs=1)
    c.max_steps_per_epoch = 1
    training.run(c, wd)
    return wd


@pytest.fixture(scope="module")
def clf_wd(data_dir, tmp_path_factory):
    """A tiny fused classifier (all modalities) fine-tuned on the release."""
    wd = str(tmp_path_factory.mktemp("all") / "run")
    c = ft_config("all,full", dataset="full_42", data_dir=data_dir, num_epochs=1)
    c.max_steps_per_epoch = 1
    training.run(c, wd)
    return wd


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Published-format weights of the fused classifier (small, random),
    imported with the release configuration's info.json."""
    wd = tmp_path_factory.mktemp("imported") / "all"
    api.import_to_workdir(os.path.join(WEIGHTS, "all"), wd, info_json=INFO)
    return str(wd)


@pytest.fixture(scope="module")
def imported_reference(imported, data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "export")
    export_embeddings.export(
        imported, "full_42", ["train"], out, data_dir=data_dir, progress=False
    )
    return out


def _predict(workdir, path, out, **kw):
    kw.setdefault("num_workers", 0)
    return predict_lib.predict(workdir, path, str(out), progress=False, **kw)


# --------------------------------------------------------------------- parity
def _export_parity(workdir, data_dir, files, tmp_path):
    """The test split exported from the built release, and the same objects
    predicted from a catalogue of their raw files: same embeddings (and
    logits, classes for a classifier)."""
    ex = str(tmp_path / "export")
    export_embeddings.export(
        workdir, "full_42", ["test"], ex, data_dir=data_dir, progress=False
    )
    want = store.load_split(ex, "test")
    rows = [
        _row(files, s, r, absolute=bool(i % 3 == 0))
        for i, (s, r) in enumerate(_release_rows("test"))
    ]
    got = _predict(workdir, _catalogue(files, "test.csv", rows), tmp_path / "out")
    assert not got.bad_rows
    order = {i: j for j, i in enumerate(want.index["id"])}
    take = np.asarray([order[i] for i in got.ids])
    assert sorted(take) == list(range(len(want))) == list(range(10))
    saved = store.load_split(tmp_path / "out", predict_lib.SPLIT)
    np.testing.assert_array_equal(saved.index["id"], got.ids)
    for m in (*MODALITIES, store.FUSED):
        assert np.isfinite(saved.embeddings[m]).all(), m
        np.testing.assert_allclose(
            saved.embeddings[m], want.embeddings[m][take], atol=TOL, err_msg=m
        )
    for m in MODALITIES:
        assert np.isfinite(got.embeddings[m]).all(), m
        np.testing.assert_allclose(
            got.embeddings[m], want.embeddings[m][take], atol=TOL, err_msg=m
        )
        assert saved.present(m).all()
    np.testing.assert_array_equal(saved.labels, want.labels[take])
    lines = _read_csv(tmp_path / "out" / predict_lib.PREDICTIONS_FILE)
    assert [r["id"] for r in lines] == list(got.ids)
    assert {r["modalities"] for r in lines} == {"photometry+spectra+metadata"}
    assert [r["label"] for r in lines] == [r["label"] for r in rows]
    if want.logits is None:
        assert got.logits is None and "class" not in lines[0]  # CLIP: k-NN only
    else:
        np.testing.assert_allclose(got.logits, want.logits[take], atol=TOL)
        want_class = np.argmax(want.logits[take], 1)
        assert [r["class"] for r in lines] == [schema.CLASSES[c] for c in want_class]
    return got, lines


def test_parity_of_release_export_and_catalogue(imported, data_dir, files, tmp_path):
    _, lines = _export_parity(imported, data_dir, files, tmp_path)
    names = list(schema.CLASSES)
    for r in lines:  # every class's probability, summing to 1; per-modality votes
        p = np.array([float(r[f"p_{c}"]) for c in names])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert names[int(np.argmax(p))] == r["class"]
        assert all(r[f"class_{m}"] in names for m in MODALITIES)


@pytest.mark.slow
def test_stats_recorded_by_training_equal_the_release(clip_wd, clf_wd):
    want = normalisation.NormalisationStats.from_info_json(INFO)
    for wd in (clip_wd, clf_wd):
        got = normalisation.read_stats(wd)
        assert got.mean == want.mean and got.std == want.std


@pytest.mark.slow
def test_parity_trained_clip_export_and_catalogue(clip_wd, data_dir, files, tmp_path):
    _export_parity(clip_wd, data_dir, files, tmp_path)


@pytest.mark.slow
def test_parity_finetuned_test_predictions_and_catalogue(
    clf_wd, data_dir, files, tmp_path
):
    pred = np.load(os.path.join(clf_wd, reports.PREDICTIONS_FILE))
    rows = [_row(files, s, r) for s, r in _release_rows("test")]
    got = _predict(clf_wd, _catalogue(files, "test.csv", rows), tmp_path / "out")
    order = {str(i): j for j, i in enumerate(pred["id"])}
    take = np.asarray([order[i] for i in got.ids])
    assert sorted(take) == list(range(10))
    np.testing.assert_allclose(got.logits, pred["logits"][take], atol=TOL)
    np.testing.assert_array_equal(np.argmax(got.logits, 1), pred["pred"][take])
    lines = _read_csv(tmp_path / "out" / predict_lib.PREDICTIONS_FILE)
    names = list(schema.CLASSES)
    assert [r["class"] for r in lines] == [names[p] for p in pred["pred"][take]]
    saved = store.load_split(tmp_path / "out", predict_lib.SPLIT)
    np.testing.assert_allclose(saved.logits, got.logits, atol=1e-6)
    # The run's calibration: temperature-scaled probabilities; the OOD score
    # joins the head features' Mahalanobis percentile with the density of
    # the light-curve numbers, here those the build stored for each star.
    cal = calibration_files.load(clf_wd)
    assert cal.inputs is not None
    probs = calibration.softmax(got.logits, cal.temperature)
    for r, p in zip(lines, probs, strict=True):
        got_p = [float(r[f"p_{c}"]) for c in names[: len(p)]]
        np.testing.assert_allclose(got_p, p, atol=2e-6)
        assert r["ood_method"] == "mahalanobis+light_curve_numbers"
    feats, _ = calibration.head_features(got.embeddings, list(got.embeddings))
    # The numbers from the build's own records: photometry_aux and the
    # second period measured on the stored light curve (calibrate's way;
    # predict measures it on the catalogue row's preprocessed curve).
    assert calibration.SECOND_PERIOD_CHANNEL in cal.inputs.channels
    stats = normalisation.read_stats(clf_wd)
    built = datasets.open_sources("full_42", ("test",), data_dir)["test"]
    aux = {}
    for i in range(len(built)):
        rec = built[i]
        key = rec["id"].decode() if isinstance(rec["id"], bytes) else str(rec["id"])
        second = lightcurve_modes.second_period_logit(rec, stats)
        assert np.isfinite(second)
        aux[key] = np.append(rec["photometry_aux"], second)
    numbers = np.stack([aux[str(i)] for i in got.ids])
    np.testing.assert_allclose(
        [float(r["second_period_power"]) for r in lines],
        scipy.special.expit(numbers[:, calibration.SECOND_PERIOD_CHANNEL]),
        atol=1e-4,
    )
    want = calibration.combined_percentile(
        cal.ood.percentile(cal.ood.score(feats)),
        cal.inputs.percentile(cal.inputs.score(numbers, np.argmax(got.logits, 1))),
    )
    np.testing.assert_allclose([float(r["ood_score"]) for r in lines], want, atol=1e-3)
    np.testing.assert_allclose(
        [float(r["ood_percentile"]) for r in lines], want, atol=0.05
    )


def test_zero_parameter_restore_matches_a_random_init_restore(imported):
    """Restores build with zero parameters; the restored model must be the
    model a random initialisation plus the checkpoint's parameters gives,
    key streams and all."""
    import jax
    from flax import nnx

    from astrom3_jax import models

    ours, config = api.load_model(imported)
    recorded = json.loads((pathlib.Path(imported) / "config.json").read_text())
    theirs = models.init_model(config.model, seed=recorded.get("seed", 0))
    models.copy_params(theirs, ours, "restored into a random init")
    theirs.eval()

    def leaves(model):
        out = []
        for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(model))):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                x = jax.random.key_data(x)
            out.append(np.asarray(x))
        return out

    a, b = leaves(ours), leaves(theirs)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # The parameters are the published file's, not zeros.
    published, _, _ = weights.import_reference(os.path.join(WEIGHTS, "all"))
    for x, y in zip(
        jax.tree.leaves(nnx.to_pure_dict(nnx.state(ours, nnx.Param))),
        jax.tree.leaves(nnx.to_pure_dict(nnx.state(published, nnx.Param))),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_default_workers_leave_two_cores_to_the_model(monkeypatch):
    monkeypatch.setattr(workers_lib, "usable_cpus", lambda: 2)
    assert predict_lib.default_workers(100_000) == 0
    monkeypatch.setattr(workers_lib, "usable_cpus", lambda: 16)
    assert predict_lib.default_workers(100_000) == workers_lib.MAX_WORKERS
    assert predict_lib.default_workers(10) == 0


# ------------------------------------------------------ incomplete objects
def test_light_curve_only_rows(imported, files, tmp_path):
    release = _release_rows("test")
    rows = [_row(files, s, r) for s, r in release[:4]]
    rows += [_row(files, s, r, spectrum=False, metadata=False) for s, r in release[:3]]
    for r in rows[4:]:
        r["id"] += "-lc"
    path = _catalogue(files, "lc_only.csv", rows)
    got = _predict(imported, path, tmp_path / "out")
    full, lc = slice(0, 4), slice(4, 7)
    assert got.present["photometry"].all()
    assert np.isfinite(got.embeddings["photometry"]).all()
    for m in ("spectra", "metadata"):
        assert got.present[m][full].all() and not got.present[m][lc].any()
        assert np.isnan(got.embeddings[m][lc]).all()
        assert np.isfinite(got.embeddings[m][full]).all()
    # The photometry encoder sees the same light curve either way.
    np.testing.assert_allclose(
        got.embeddings["photometry"][lc], got.embeddings["photometry"][:3], atol=TOL
    )
    saved = store.load_split(tmp_path / "out", predict_lib.SPLIT)
    for m in MODALITIES:
        np.testing.assert_array_equal(
            saved.index[store.presence_column(m)], got.present[m]
        )
    assert np.isnan(saved.embeddings["spectra"][lc]).all()
    np.testing.assert_allclose(  # fused: the mean of what the star has
        saved.embeddings[store.FUSED][lc], saved.embeddings["photometry"][lc], atol=TOL
    )
    assert np.isfinite(got.logits).all()
    lines = _read_csv(tmp_path / "out" / predict_lib.PREDICTIONS_FILE)
    assert [r["modalities"] for r in lines[4:]] == ["photometry"] * 3
    assert all(
        r["class_spectra"] == r["class_metadata"] == "" for r in lines[4:]
    )  # no vote from a modality the star lacks
    assert all(r["class_photometry"] in schema.CLASSES for r in lines)
    # Only the light curve counts: the fused class is the photometry vote.
    assert [r["class"] for r in lines[4:]] == [r["class_photometry"] for r in lines[4:]]


# ------------------------------------------------------------------ bad rows
BAD = {  # case -> (the part of the file name in the message, the problem)
    "missing_file": ("gone.dat", "not found"),
    "corrupt_fits": ("broken.fits", "unreadable FITS"),
    "one_point": ("short.dat", "1 distinct point"),
    "nan_catalogue": ("bad.csv", "w3_mag"),
    "unknown_class": ("bad.csv", "unknown class 'CEP'"),
}


def _break(files, row, case):
    tables = files / "tables"
    if case == "missing_file":
        row["lightcurve"] = "nowhere/gone.dat"
    elif case == "corrupt_fits":
        (tables / "broken.fits").write_bytes(b"SIMPLE  = not a FITS file" * 20)
        row["spectrum"] = "broken.fits"
    elif case == "one_point":
        (tables / "short.dat").write_text(HEADER + "2457000.1 12.0 0.01 5.0 0.1\n")
        row["lightcurve"] = "short.dat"
    elif case == "nan_catalogue":
        row["w3_mag"] = "nan"
    elif case == "unknown_class":
        row["label"] = "CEP"
    return row


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_row_stops_predict_naming_row_file_and_problem(
    imported, files, tmp_path, case
):
    file, problem = BAD[case]
    rows = [_row(files, s, r) for s, r in _release_rows("test")[:3]]
    _break(files, rows[1], case)
    path = _catalogue(files, "bad.csv", rows)
    out = tmp_path / case
    with pytest.raises(catalog_rows.RowError) as err:
        _predict(imported, path, out)
    msg = str(err.value)
    assert "row 1" in msg and rows[1]["id"] in msg, msg
    assert file in msg and problem in msg, msg
    assert "--skip_bad" in msg
    assert not (out / predict_lib.PREDICTIONS_FILE).exists()


def test_skip_bad_lists_bad_rows_and_predicts_the_rest(imported, files, tmp_path):
    release = _release_rows("train", "test")  # 30 rows, 5 of them bad
    rows = [_row(files, s, r) for s, r in release]
    broken = {2 + 5 * i: case for i, case in enumerate(BAD)}
    for i, case in broken.items():
        _break(files, rows[i], case)
    path = _catalogue(files, "bad.csv", rows)
    with pytest.raises(catalog_tables.CatalogError, match=r"5 of 30 rows are bad"):
        _predict(
            imported, path, tmp_path / "strict", skip_bad=True, max_bad_fraction=0.1
        )
    listed = _read_csv(tmp_path / "strict" / catalog.BAD_ROWS_FILE)
    assert len(listed) == 5  # listed even when the run then fails
    out = tmp_path / "out"
    got = _predict(imported, path, out, skip_bad=True, max_bad_fraction=0.2)
    good = [r["id"] for i, r in enumerate(rows) if i not in broken]
    assert list(got.ids) == good and len(got.bad_rows) == 5
    listed = _read_csv(out / catalog.BAD_ROWS_FILE)
    assert [int(b["row"]) for b in listed] == sorted(broken)
    for b in listed:
        file, problem = BAD[broken[int(b["row"])]]
        assert b["id"] == rows[int(b["row"])]["id"]
        assert file in b["file"] and problem in b["reason"], b
    assert [r["id"] for r in _read_csv(out / predict_lib.PREDICTIONS_FILE)] == good
    assert store.read_manifest(out)["bad_rows"] == 5


# --------------------------------------------------------- published weights
def test_published_weights_with_recorded_statistics(imported, tmp_path):
    wd = imported  # import_to_workdir(folder, wd, info_json=INFO)
    got = normalisation.read_stats(wd)
    want = normalisation.NormalisationStats.from_info_json(INFO)
    assert got.mean == want.mean and got.std == want.std
    assert got.source == INFO
    res = _predict(wd, EXAMPLE, tmp_path / "out")
    assert len(res.ids) == 12 and np.isfinite(res.logits).all()
    lines = _read_csv(tmp_path / "out" / predict_lib.PREDICTIONS_FILE)
    assert all(r["class"] in schema.CLASSES for r in lines)
    for r in lines:  # no calibration with imported weights: the MSP baseline
        top = max(float(r[f"p_{c}"]) for c in schema.CLASSES)
        assert r["ood_method"] == "max_softmax" and r["ood_percentile"] == ""
        assert float(r["ood_score"]) == pytest.approx(1 - top, abs=2e-6)
    kinds = [r["modalities"] for r in lines]
    assert kinds.count("photometry+spectra+metadata") == 8
    assert kinds.count("photometry+metadata") == 3 and kinds.count("photometry") == 1


def test_a_model_without_statistics_is_refused(tmp_path):
    wd = tmp_path / "imported"
    # A local folder and no info.json: imported, but without statistics.
    api.import_to_workdir(os.path.join(WEIGHTS, "clip"), wd)
    assert not (wd / normalisation.STATS_FILE).exists()
    out = tmp_path / "out"
    with pytest.raises(normalisation.MissingStatsError) as err:
        _predict(str(wd), EXAMPLE, out)
    msg = str(err.value)
    assert isinstance(err.value, errors.UserError)
    assert f"python -m astrom3_jax.record_stats --workdir {wd}" in msg
    assert "--info_json" in msg and "--dataset" in msg
    assert not out.exists()


# ---------------------------------------------------------------- reference
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_reference_neighbours_vote_and_outliers(
    imported, imported_reference, files, tmp_path
):
    reference = imported_reference  # the train split's export
    release = _release_rows("test")
    rows = [_row(files, s, r) for s, r in release]
    lc_only = [
        _row(files, s, r, spectrum=False, metadata=False) for s, r in release[:2]
    ]
    for r in lc_only:
        r["id"] += "-lc"
    rows[0]["label"] = ""  # an unlabelled star: no mislabel score
    path = _catalogue(files, "ref.csv", rows + lc_only)
    k = 4
    out = tmp_path / "out"
    got = _predict(imported, path, out, reference=reference, k=k)
    ref = store.load_split(reference, "train")
    lines = _read_csv(out / predict_lib.PREDICTIONS_FILE)
    nb = _read_csv(out / predict_lib.NEIGHBOURS_FILE)
    assert len(nb) == k * len(rows + lc_only)
    for i, line in enumerate(lines):
        have = [m for m in MODALITIES if got.present[m][i]]
        # Direct NumPy cosine on the modalities the star has.
        q = _unit(np.mean([got.embeddings[m][i : i + 1] for m in have], 0))
        c = _unit(np.mean([ref.embeddings[m] for m in have], 0))
        cos = (c @ q.T)[:, 0]
        top = np.argsort(-cos, kind="stable")[:k]
        mine = [n for n in nb if n["id"] == line["id"]]
        assert [int(n["rank"]) for n in mine] == list(range(1, k + 1))
        assert [n["neighbour_id"] for n in mine] == list(ref.index["id"][top])
        np.testing.assert_allclose(
            [float(n["cosine"]) for n in mine], cos[top], atol=TOL
        )
        names = [ref.class_names[j] for j in ref.labels[top]]
        assert [n["neighbour_label"] for n in mine] == names
        counts = np.bincount(ref.labels[top], minlength=len(schema.CLASSES))
        assert line["knn_class"] == schema.CLASSES[int(np.argmax(counts))]
        assert float(line["knn_agreement"]) == pytest.approx(counts.max() / k, abs=1e-3)
        assert float(line["outlier_score"]) == pytest.approx(
            1 - cos[top].mean(), abs=TOL
        )
        assert 0.0 <= float(line["outlier_percentile"]) <= 100.0
        if line["label"]:
            agree = np.mean(np.asarray(names) == line["label"])
            assert float(line["mislabel_score"]) == pytest.approx(1 - agree, abs=1e-3)
        else:
            assert line.get("mislabel_score", "") == ""
    assert got.ids[-1].endswith("-lc") and lines[-1]["modalities"] == "photometry"
    # The percentile places a star's score among the reference stars' own
    # (each against the other reference stars, itself left out).
    for have, i in ((MODALITIES, 1), (("photometry",), len(lines) - 1)):
        c = _unit(np.mean([ref.embeddings[m] for m in have], 0))
        s = c @ c.T
        np.fill_diagonal(s, -np.inf)
        own = 1 - np.sort(s, axis=1)[:, ::-1][:, :k].mean(1)
        score = float(lines[i]["outlier_score"])
        want = 100.0 * np.mean(own <= score)
        assert float(lines[i]["outlier_percentile"]) == pytest.approx(want, abs=0.051)


def test_reference_must_be_an_export(imported, files, tmp_path):
    rows = [_row(files, s, r) for s, r in _release_rows("test")[:2]]
    path = _catalogue(files, "two.csv", rows)
    with pytest.raises(predict_lib.PredictError, match="not an export"):
        _predict(imported, path, tmp_path / "out", reference=str(tmp_path))


# ---------------------------------------------------------------------- CLI
def test_cli_missing_catalogue_is_a_one_line_error(imported, tmp_path):
    cmd = [
        sys.executable, "-m", "astrom3_jax.predict", f"--workdir={imported}",
        f"--catalog={tmp_path / 'nope.csv'}", f"--out={tmp_path / 'out'}",
    ]  # fmt: skip
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "nope.csv" in lines[0] and "not found" in lines[0]
    assert "Traceback" not in p.stderr


# ------------------------------------------------------- survey downloads
SKY_PATROL = os.path.join(
    ROOT,
    "tests",
    "fixtures",
    "real_formats",
    "3016935867962755968_skypatrol_excerpt.csv",
)


def _usable_points(path, band):
    """Distinct times of `band` rows that are detections with real values,
    counted straight from the CSV (independently of the package's reader)."""
    with open(path, newline="") as f:
        times = {
            r["HJD"]
            for r in csv.DictReader(f)
            if r["Filter"] == band
            and not r["mag"].startswith(">")
            and float(r["mag"]) < 90
            and 0 < float(r["mag_err"]) < 90
        }
    return len(times)


def test_a_sky_patrol_download_goes_in_and_predictions_say_what_was_used(
    imported, files, tmp_path
):
    shutil.copy(SKY_PATROL, files / "tables" / "skypatrol.csv")
    (split, r), *_ = _release_rows("test")
    row = _row(files, split, r) | {"lightcurve": "skypatrol.csv"}
    path = _catalogue(files, "skypatrol_catalog.csv", [row])
    for band, out in (("V", "out_v"), ("g", "out_g")):
        _predict(imported, path, tmp_path / out, band=None if band == "V" else band)
        (line,) = _read_csv(tmp_path / out / predict_lib.PREDICTIONS_FILE)
        assert (line["band"], line["layout"]) == (band, "skypatrol_v1")
        assert int(line["n_points"]) == _usable_points(SKY_PATROL, band)
        other = {"V": 95, "g": 127}[band]  # the excerpt's rows of the other band
        assert int(line["dropped_other_band"]) == other
        assert int(line["dropped_nondetection"]) == {"V": 4, "g": 2}[band]
        assert int(line["dropped_sentinel"]) == {"V": 6, "g": 2}[band]


def test_a_download_alone_gets_derived_values_and_the_python_bridge_agrees(
    imported, files, tmp_path
):
    """A row with only an id and a Sky Patrol file: its light-curve numbers
    are measured (sources in predictions.csv), and catalog_inputs gives the
    arrays that reproduce predict's embedding through model.embed."""
    shutil.copy(SKY_PATROL, files / "tables" / "skypatrol_alone.csv")
    path = _catalogue(
        files, "download_only.csv", [{"id": "new", "lightcurve": "skypatrol_alone.csv"}]
    )
    res = _predict(imported, path, tmp_path / "out")
    (line,) = _read_csv(tmp_path / "out" / predict_lib.PREDICTIONS_FILE)
    assert (line["modalities"], line["modalities_used"]) == ("photometry",) * 2
    for c in ("amplitude", "period", "lksl_statistic"):
        assert line[f"{c}_source"] == "derived" and float(line[c]) > 0
    assert line["rfr_score_source"] == "training_mean"
    stars = astrom3_jax.catalog_inputs(path, imported)
    assert stars.ids == ("new",) and not stars.bad_rows
    pv = stars.examples[0].photometry_values
    assert float(line["period"]) == pytest.approx(pv.values["period"], rel=1e-9)
    model, _ = api.load_model(imported)
    emb = model.embed(**stars.inputs)
    np.testing.assert_allclose(
        np.asarray(emb["photometry"]), res.embeddings["photometry"], atol=TOL
    )


def test_cli_clip_without_reference_and_a_misspelt_column(files, tmp_path):
    """A CLIP model without --reference says where its output is and what
    a reference adds; an unknown column is named with a close known one."""
    wd = tmp_path / "clip"
    api.import_to_workdir(os.path.join(WEIGHTS, "clip"), wd, info_json=INFO)
    (split, r), *_ = _release_rows("test")
    row = _row(files, split, r)
    row["light_curve"] = row.pop("lightcurve")
    path = _catalogue(files, "misspelt.csv", [row])
    cmd = [
        sys.executable, "-m", "astrom3_jax.predict", f"--workdir={wd}",
        f"--catalog={path}", f"--out={tmp_path / 'out'}",
    ]  # fmt: skip
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "column(s) not used: 'light_curve' (did you mean 'lightcurve'?)" in p.stderr
    assert "this model has no classifier" in p.stdout
    assert "--reference" in p.stdout
    (line,) = _read_csv(tmp_path / "out" / predict_lib.PREDICTIONS_FILE)
    assert line["modalities"] == "spectra+metadata"  # the light curve was missed


# ----------------------------------------------------------------- shards
def test_sharded_predict_merged_equals_one_predict(
    imported, imported_reference, files, tmp_path
):
    """Three shards (one with a bad row), merged, give what one run gives."""
    release = _release_rows("train", "test")
    rows = [_row(files, s, r) for s, r in release]
    _break(files, rows[4], next(iter(BAD)))
    path = _catalogue(files, "shards.csv", rows)
    kw = dict(reference=imported_reference, k=3, skip_bad=True, max_bad_fraction=0.5)
    whole = tmp_path / "whole"
    _predict(imported, path, whole, **kw)
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i in (2, 0, 1):  # any order, any machine
        _predict(imported, path, parts[i], shard=(i, 3), **kw)
    assert store.read_manifest(parts[1])["rows"] == [10, 20]
    merged = tmp_path / "merged"
    shards.merge([str(p) for p in parts], merged)
    for name in (predict_lib.PREDICTIONS_FILE, predict_lib.NEIGHBOURS_FILE,
                 catalog.BAD_ROWS_FILE):  # fmt: skip
        ours, theirs = _read_csv(merged / name), _read_csv(whole / name)
        assert [r["id"] for r in ours] == [r["id"] for r in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                try:  # numbers: equal up to the batch they were run in
                    assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5)
                except ValueError:
                    assert a[key] == b[key], (key, a[key], b[key])
    ours, theirs = (
        store.load_split(merged, "catalog"),
        store.load_split(whole, "catalog"),
    )
    np.testing.assert_array_equal(ours.index["id"], theirs.index["id"])
    for m in theirs.embeddings:
        np.testing.assert_allclose(
            ours.embeddings[m], theirs.embeddings[m], atol=1e-5, equal_nan=True
        )
    manifest = store.read_manifest(merged)
    assert manifest["bad_rows"] == 1 and "shard" not in manifest
    done = subprocess.run(
        [sys.executable, "-m", "astrom3_jax.predict", "--out", str(tmp_path / "cli"),
         "--merge", ",".join(str(p) for p in parts)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / predict_lib.PREDICTIONS_FILE).read_text() == (
        merged / predict_lib.PREDICTIONS_FILE
    ).read_text()

    # A shard missing, or one of another run, is refused by name.
    with pytest.raises(shards.ShardError, match=r"missing \[1\]"):
        shards.merge([str(parts[0]), str(parts[2])], tmp_path / "m2")
    with pytest.raises(shards.ShardError, match="not a shard"):
        shards.merge([str(p) for p in parts] + [str(whole)], tmp_path / "m3")
    (parts[2] / predict_lib.PREDICTIONS_FILE).write_text("id\n")
    with pytest.raises(shards.ShardError, match="interrupted"):
        shards.merge([str(p) for p in parts], tmp_path / "m4")


# ----------------------------------------------------------- chunk by chunk
def _files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_files_do_not_depend_on_the_chunk_size(
    imported, imported_reference, files, tmp_path, monkeypatch
):
    """predict holds a chunk of stars at a time: run, scored and written a
    batch at a time, or (after the first batch) all in one chunk, it writes
    the same files, byte for byte (index.npz: the same columns); its Result
    is what the files hold. A strict run failing after some chunks were
    written leaves nothing behind."""
    release = _release_rows("train", "test")
    rows = [_row(files, s, r) for s, r in release]
    lc_only = [
        _row(files, s, r, spectrum=False, metadata=False) for s, r in release[:3]
    ]
    for r in lc_only:
        r["id"] += "-lc"
    rows = rows[:12] + lc_only + rows[12:]
    batch = 8  # conftest's 8 devices
    for r in rows[:batch]:  # the first chunk has no mislabel_score column
        r["label"] = ""
    _break(files, rows[9], "missing_file")
    path = _catalogue(files, "chunks.csv", rows)
    chunks = []
    add = writing.Output.add
    monkeypatch.setattr(
        writing.Output, "add",
        lambda self, ran, *a: (chunks.append(len(ran.ids)), add(self, ran, *a)),
    )  # fmt: skip
    kw = dict(reference=imported_reference, k=3, skip_bad=True, batch_size=batch)
    small = _predict(imported, path, tmp_path / "small", chunk_batches=1, **kw)
    assert chunks == [batch] * 4  # 33 rows, 1 bad
    chunks.clear()
    whole = _predict(imported, path, tmp_path / "whole", chunk_batches=1000, **kw)
    assert chunks == [batch, 3 * batch]
    names = _files_under(tmp_path / "whole")
    assert names == _files_under(tmp_path / "small")
    assert names == sorted(
        [predict_lib.PREDICTIONS_FILE, predict_lib.NEIGHBOURS_FILE,
         catalog.BAD_ROWS_FILE, "manifest.json"]
        + [f"catalog/{m}.npy" for m in (*MODALITIES, "fused", "logits")]
        + ["catalog/index.npz"]
    )  # fmt: skip
    for name in names:
        a, b = tmp_path / "small" / name, tmp_path / "whole" / name
        if name.endswith(".npz"):
            with np.load(a) as x, np.load(b) as y:
                assert x.files == y.files
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=key)
                    assert x[key].dtype == y[key].dtype, key
        else:
            assert a.read_bytes() == b.read_bytes(), name
    lines = _read_csv(tmp_path / "small" / predict_lib.PREDICTIONS_FILE)
    assert "mislabel_score" in lines[0] and lines[0]["mislabel_score"] == ""
    assert [r["modalities"] for r in lines[11:14]] == ["photometry"] * 3
    # The Result: the files' contents.
    saved = store.load_split(tmp_path / "small", predict_lib.SPLIT)
    assert list(small.ids) == [r["id"] for r in lines] == list(saved.index["id"])
    assert len(small.rows) == len(lines) and list(small.rows) == lines
    assert small.rows[batch] == lines[batch] and "mislabel_score" in lines[batch]
    np.testing.assert_array_equal(small.logits, saved.logits)
    for m in MODALITIES:
        np.testing.assert_array_equal(small.present[m], saved.present(m))
        np.testing.assert_array_equal(small.embeddings[m], saved.embeddings[m])
        np.testing.assert_array_equal(whole.embeddings[m], small.embeddings[m])
    assert [b.row for b in small.bad_rows] == [9]
    # Strict, the bad row last: it fails once some chunks were written (as
    # many as ran before the reader, up to 2 chunks ahead, met the row).
    last = _catalogue(files, "bad_last.csv", rows[:9] + rows[10:] + rows[9:10])
    strict = tmp_path / "strict"
    chunks.clear()
    with pytest.raises(catalog_rows.RowError, match="row 32"):
        _predict(imported, last, strict, batch_size=batch, chunk_batches=1)
    assert chunks and set(chunks) == {batch}
    assert _files_under(strict) == []
