"""Input pipeline: crops, padding, shuffling, shards, resume, eval padding."""

import hashlib
import json

import numpy as np
import pytest

from astrom3_jax.data import (
    example_decoder,
    memory_cache,
    modalities,
    pipeline,
    source_reader,
)

SEQ = 200


def make_examples(n, seed=0, lengths=None):
    """Examples whose values say where they came from.

    photometry[:, 0] = row number, [:, 1] = example number, [:, 2] = 0.5;
    metadata[0] = example number; aux = example number + (0.1 .. 0.6).
    """
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(120, 600, n)
    out = []
    for i, length in enumerate(lengths):
        rows = np.arange(length, dtype=np.float32)
        phot = np.stack([rows, np.full(length, i), np.full(length, 0.5)], 1)
        out.append(
            {
                "id": str(i).encode(),
                "name": f"star{i}".encode(),
                "photometry": phot.astype(np.float32),
                "photometry_aux": (i + np.arange(1, 7) / 10).astype(np.float32),
                "spectra": rng.normal(size=(3, 2575)).astype(np.float32),
                "metadata": np.concatenate([[i], rng.normal(size=33)]).astype(
                    np.float32
                ),
                "label": np.int64(i % 10),
            }
        )
    return out


def ids_of(batch):
    return batch["metadata"][:, 0].astype(int)


def take(it, k):
    return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def check_photometry(batch, source, train):
    """Every row is a contiguous window of its curve, padded and tiled as specified."""
    for r, i in enumerate(ids_of(batch)):
        curve, aux = source[i]["photometry"], source[i]["photometry_aux"]
        n = len(curve)
        phot, mask = batch["photometry"][r], batch["photometry_mask"][r]
        real = min(n, SEQ)
        start = int(phot[0, 0])
        if train:
            assert 0 <= start <= max(n - SEQ, 0)
        else:
            assert start == max(n - SEQ, 0) // 2
        np.testing.assert_array_equal(phot[:real, :3], curve[start : start + real])
        np.testing.assert_array_equal(phot[real:, :3], 0)
        np.testing.assert_array_equal(mask, np.arange(SEQ) < real)
        np.testing.assert_array_equal(phot[:, 3:], np.broadcast_to(aux, (SEQ, 6)))


@pytest.fixture(scope="module")
def source():
    # Short, exact and long curves, then random lengths.
    lengths = [150, 200, 201, 599, 1] + list(
        np.random.default_rng(1).integers(120, 600, 43)
    )
    return make_examples(48, lengths=lengths)


def test_crop_starts_hand_computed():
    lengths = np.array([150, 200, 201, 450, 450])
    u = np.array([0.7, 0.7, 0.999, 0.0, 0.999])
    np.testing.assert_array_equal(
        modalities.crop_starts(lengths, SEQ, True, u), [0, 0, 1, 0, 250]
    )
    np.testing.assert_array_equal(
        modalities.crop_starts(lengths, SEQ, False, u), [0, 0, 0, 125, 125]
    )


def test_crop_pad_hand_computed():
    curves = modalities.Ragged.from_list(
        [np.arange(15, dtype=np.float32).reshape(5, 3)], (3,), np.float32
    )
    aux = np.arange(6, dtype=np.float32)[None]
    phot, mask = modalities.crop_pad(curves, aux, np.array([1]), 3)
    expected = np.array(
        [
            [3, 4, 5, 0, 1, 2, 3, 4, 5],
            [6, 7, 8, 0, 1, 2, 3, 4, 5],
            [9, 10, 11] + list(range(6)),
        ],
        np.float32,
    )
    np.testing.assert_array_equal(phot[0], expected)
    np.testing.assert_array_equal(mask[0], [1, 1, 1])
    phot, mask = modalities.crop_pad(curves, aux, np.array([0]), 7)
    np.testing.assert_array_equal(phot[0, 5:, :3], 0)
    np.testing.assert_array_equal(phot[0, 5:, 3:], np.tile(aux, (2, 1)))
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 0, 0])


def test_train_batches_shapes_and_crops(source):
    it = pipeline.make_train_loader(source, batch_size=16, seed=3)
    batches = take(it, 6)  # two epochs of 3 batches
    b = batches[0]
    assert b["photometry"].shape == (16, SEQ, 9)
    assert b["photometry_mask"].shape == (16, SEQ)
    assert b["spectra"].shape == (16, 3, 2575)
    assert b["metadata"].shape == (16, 34)
    assert b["label"].dtype == np.int32 and b["mask"].dtype == np.float32
    np.testing.assert_array_equal(b["mask"], 1)
    for batch in batches:
        check_photometry(batch, source, train=True)
        i = ids_of(batch)
        np.testing.assert_array_equal(batch["label"], i % 10)
        np.testing.assert_array_equal(
            batch["spectra"], [source[k]["spectra"] for k in i]
        )
    # The long curve gets different windows in different epochs.
    starts = {
        int(batch["photometry"][r, 0, 0])
        for batch in take(it, 30)
        for r in np.flatnonzero(ids_of(batch) == 3)
    }
    assert len(starts) > 1


def test_epochs_reshuffle_reproducibly(source):
    ids = [
        ids_of(b)
        for b in take(pipeline.make_train_loader(source, batch_size=10, seed=7), 8)
    ]
    epochs = [
        np.concatenate(ids[:4]),
        np.concatenate(ids[4:]),
    ]  # 48 // 10 = 4 per epoch
    for e in epochs:
        assert len(set(e)) == 40  # a permutation minus the dropped remainder
    assert not np.array_equal(epochs[0], epochs[1])
    again = [
        ids_of(b)
        for b in take(pipeline.make_train_loader(source, batch_size=10, seed=7), 8)
    ]
    np.testing.assert_array_equal(ids, again)
    other = [
        ids_of(b)
        for b in take(pipeline.make_train_loader(source, batch_size=10, seed=8), 4)
    ]
    assert not np.array_equal(np.concatenate(ids[:4]), np.concatenate(other))


def test_num_epochs_ends(source):
    batches = list(
        pipeline.make_train_loader(source, batch_size=16, seed=0, num_epochs=2)
    )
    assert len(batches) == 6


def test_shards_disjoint_and_cover_global_batch(source):
    whole = take(pipeline.make_train_loader(source, batch_size=16, seed=5), 6)
    shards = [
        take(
            pipeline.make_train_loader(
                source, batch_size=16, seed=5, shard_index=p, shard_count=2
            ),
            6,
        )
        for p in range(2)
    ]
    seen = []
    for step, full in enumerate(whole):
        a, b = shards[0][step], shards[1][step]
        assert a["photometry"].shape[0] == 8
        assert not set(ids_of(a)) & set(ids_of(b))
        for k in full:  # same rows and the same crops as with one process
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), full[k])
        seen.extend(ids_of(a).tolist() + ids_of(b).tolist())
    assert sorted(seen[:48]) == list(range(48))  # one epoch covers the data


def test_resume_from_state_gives_same_batches(source):
    it = pipeline.make_train_loader(source, batch_size=16, seed=11)
    take(it, 4)  # into the second epoch
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, 4)
    resumed = pipeline.make_train_loader(source, batch_size=16, seed=11)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 4), expected)


def test_eval_batches_keep_every_example_once(source):
    n = 37
    src = source[:n]
    per_process = [
        list(
            pipeline.make_eval_batches(
                src, batch_size=8, shard_index=p, shard_count=2, extra_fields=("id",)
            )
        )
        for p in range(2)
    ]
    assert [len(b) for b in per_process] == [5, 5]  # same count on every process
    seen = []
    for batches in per_process:
        for b in batches:
            assert b["photometry"].shape == (4, SEQ, 9)
            real = b["mask"] == 1
            for k in ("photometry", "photometry_mask", "spectra", "metadata", "label"):
                np.testing.assert_array_equal(b[k][~real], 0)
            assert all(x == b"" for x in b["id"][~real])
            sub = {k: v[real] for k, v in b.items()}
            check_photometry(sub, src, train=False)
            assert [int(x) for x in sub["id"]] == ids_of(sub).tolist()
            seen.extend(ids_of(sub).tolist())
    assert sorted(seen) == list(range(n))
    single = pipeline.make_eval_batches(src, batch_size=8)
    assert len(single) == 5
    assert np.concatenate([b["mask"] for b in single]).sum() == n


@pytest.mark.parametrize(
    "names", [("spectra",), ("photometry",), ("metadata", "photometry")]
)
def test_modality_subsets(source, names):
    b = next(pipeline.make_train_loader(source, batch_size=8, seed=0, modalities=names))
    keys = {k for m in modalities.get(names) for k in m.batch_keys}
    assert set(b) == keys | {"label", "mask"}  # complete data: no presence flags


def test_unknown_modality(source):
    with pytest.raises(KeyError, match="unknown modalities"):
        pipeline.make_train_loader(source, batch_size=8, seed=0, modalities=("radio",))


def test_fourth_modality_is_a_registry_entry(source):
    def colour(cols, ctx):
        return {"colour": cols["metadata"][:, :2] * 2}

    # The entry is gone again after the block.
    entry = modalities.Modality("colour", ("metadata",), ("colour",), colour)
    with modalities.temporarily(entry):
        b = next(
            pipeline.make_eval_batches(
                source, batch_size=8, modalities=("colour",)
            ).__iter__()
        )
    np.testing.assert_array_equal(b["colour"][:, 0], 2 * np.arange(8))
    assert "colour" not in modalities.names()


def test_cache_gives_identical_batches(source):
    plain = take(pipeline.make_train_loader(source, batch_size=16, seed=2), 4)
    cached = take(
        pipeline.make_train_loader(source, batch_size=16, seed=2, cache=True), 4
    )
    assert_batches_equal(plain, cached)
    plain = list(pipeline.make_eval_batches(source, batch_size=20))
    cached = list(pipeline.make_eval_batches(source, batch_size=20, cache=True))
    assert_batches_equal(plain, cached)


def test_cache_size_estimate_matches_the_packed_split(source):
    fields, ragged = (
        ["photometry", "photometry_aux", "spectra", "label"],
        ["photometry"],
    )
    reader = source_reader.Reader(source, fields, ragged)
    # By hand: float32 values, int64 labels, and a Ragged's starts and lengths.
    by_hand = sum(
        ex["photometry"].nbytes + ex["photometry_aux"].nbytes
        + ex["spectra"].nbytes + 8 + 2 * 8
        for ex in source
    )  # fmt: skip
    assert memory_cache.estimate_bytes(reader, len(source)) == by_hand
    packed = source_reader.PackedSource.from_source(source, fields, ragged)
    assert memory_cache.nbytes(packed.columns) == by_hand
    # From 8 of the 48 examples: the curves' lengths vary, the spectra do not.
    sampled = memory_cache.estimate_bytes(reader, len(source), sample=8)
    assert sampled == pytest.approx(by_hand, rel=0.1)


@pytest.mark.parametrize("available_mib,cached", [(10_000, True), (4, False)])
def test_cache_only_when_the_split_fits_in_memory(
    source, monkeypatch, caplog, available_mib, cached
):
    """The 48 examples decode to about 2 MiB: they fit in half of 10 GB,
    not in half of 4 MiB (twice their size while packing); the batches are
    the same either way."""
    monkeypatch.setattr(memory_cache, "available_bytes", lambda: available_mib << 20)
    packs = []
    pack = source_reader.PackedSource.from_source
    monkeypatch.setattr(
        source_reader.PackedSource,
        "from_source",
        lambda *a, **k: packs.append(1) or pack(*a, **k),
    )
    with caplog.at_level("INFO"):
        got = take(
            pipeline.make_train_loader(source, batch_size=16, seed=2, cache=True), 4
        )
    assert len(packs) == int(cached)
    said = "Decoding the training split" if cached else "Reading the training split"
    assert said in caplog.text
    assert_batches_equal(
        got, take(pipeline.make_train_loader(source, batch_size=16, seed=2), 4)
    )


def test_batch_size_must_split_across_processes(source):
    with pytest.raises(ValueError, match="shard_count"):
        pipeline.make_train_loader(source, batch_size=9, seed=0, shard_count=2)


# ----------------------------------------------------------- through TFDS


@pytest.fixture(scope="module")
def tfds_source(tmp_path_factory, source):
    pytest.importorskip("tensorflow_datasets")
    from astrom3_jax.data.astrom3_tfds import examples_builder

    return examples_builder.examples_source(
        source, data_dir=str(tmp_path_factory.mktemp("tfds"))
    )


def test_fast_decoder_matches_tfds(tfds_source):
    fields = ["id", "photometry", "photometry_aux", "spectra", "metadata", "label"]
    decoder = example_decoder.ExampleDecoder(tfds_source.dataset_info.features, fields)
    raw = tfds_source.data_source.__getitems__(list(range(len(tfds_source))))
    for i, record in enumerate(raw):
        fast, ref = decoder._decode_fast(record), tfds_source[i]
        for k in fields:
            assert np.asarray(fast[k]).dtype == np.asarray(ref[k]).dtype, k
            np.testing.assert_array_equal(fast[k], ref[k], err_msg=k)


def test_tfds_source_gives_same_batches_as_memory(tfds_source, source):
    # The builder shuffles records on write: look each one up by id.
    by_id = [source[int(ex["id"])] for ex in tfds_source]
    got = take(pipeline.make_train_loader(tfds_source, batch_size=16, seed=4), 3)
    want = take(pipeline.make_train_loader(by_id, batch_size=16, seed=4), 3)
    assert_batches_equal(got, want)
    for batch in got:
        check_photometry(batch, source, train=True)


# ------------------------------------------------------- incomplete objects
# Digests of batches of `source` made by the code of commit bb7250e, before
# presence flags existed: a data set without holes gives the same batches
# (and no presence flags: everything is present).
RECORDED = {
    "train": "c4eba3a1866872fc1cc360f5ad04eb1595c1a49bd2c68967fc188b6bead8b4a4",
    "eval": "22283168cbbafbc945fef7c1e5724bc241be924658cec9a60f4d5d2edc7e78e4",
    "eval_shard1": "eac5f3753ca4dc3e286635100c7d4ac98bf5413c6c8153b7e8671e32c0b20440",
}
MODS = modalities.DEFAULT_MODALITIES


def digest(batches):
    """sha256 of the batches' arrays, presence flags left out."""
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            if modalities.is_presence_key(k):
                continue
            v = np.asarray(b[k])
            h.update(k.encode() + str(v.dtype).encode() + str(v.shape).encode())
            h.update(v.tobytes() if v.dtype != object else b"|".join(v.tolist()))
    return h.hexdigest()


def test_complete_data_gives_todays_batches(source):
    train = take(pipeline.make_train_loader(source, batch_size=16, seed=3), 6)
    evals = list(
        pipeline.make_eval_batches(source, batch_size=20, extra_fields=("id",))
    )
    shard1 = list(
        pipeline.make_eval_batches(
            source[:37], batch_size=8, shard_index=1, shard_count=2
        )
    )
    assert digest(train) == RECORDED["train"]
    assert digest(evals) == RECORDED["eval"]
    assert digest(shard1) == RECORDED["eval_shard1"]
    for b in train + evals + shard1:
        assert not any(modalities.is_presence_key(k) for k in b)


def lacks(i: int) -> set[str]:
    """The modalities object i of `holey` lacks (some lack two, none all)."""
    out = set()
    if i % 3 == 0:
        out.add("spectra")
    if i % 4 == 1:
        out.add("metadata")
    if i % 7 == 5:
        out.add("photometry")
    return out


FIELDS = {"photometry": ("photometry", "photometry_aux"), "spectra": ("spectra",),
          "metadata": ("metadata",)}  # fmt: skip


@pytest.fixture(scope="module")
def holey(source):
    """`source` with None for the fields of the modalities each object lacks."""
    out = []
    for i, ex in enumerate(source):
        ex = dict(ex)
        for m in lacks(i):
            for f in FIELDS[m]:
                ex[f] = None
        out.append(ex)
    return out


def check_holes(batch, source, train):
    """Flags equal the truth per object id; absent rows hold zeros, present
    rows the object's data (light curves cropped as specified)."""
    real = batch["mask"] == 1
    ids = np.array([int(x) for x in batch["id"][real]])
    sub = {k: v[real] for k, v in batch.items()}
    for m in MODS:
        want = [m not in lacks(i) for i in ids]
        flags = batch[modalities.presence_key(m)]
        assert flags.dtype == np.float32 and flags.shape == batch["mask"].shape
        np.testing.assert_array_equal(sub[modalities.presence_key(m)], want, m)
        np.testing.assert_array_equal(flags[~real], 0)  # padding rows
    for r, i in enumerate(ids):
        if "spectra" in lacks(i):
            np.testing.assert_array_equal(sub["spectra"][r], 0)
        else:
            np.testing.assert_array_equal(sub["spectra"][r], source[i]["spectra"])
        if "metadata" in lacks(i):
            np.testing.assert_array_equal(sub["metadata"][r], 0)
        else:
            np.testing.assert_array_equal(sub["metadata"][r], source[i]["metadata"])
        if "photometry" in lacks(i):
            np.testing.assert_array_equal(sub["photometry"][r], 0)
            np.testing.assert_array_equal(sub["photometry_mask"][r], 0)
    has_lc = np.array(["photometry" not in lacks(i) for i in ids], bool)
    with_lc = {k: v[has_lc] for k, v in sub.items()}
    for r, i in enumerate(ids[has_lc]):  # check_photometry reads ids there
        with_lc["metadata"][r, 0] = i
    check_photometry(with_lc, source, train)


def test_presence_flags_and_fill_values_train(holey, source):
    batches = take(
        pipeline.make_train_loader(holey, batch_size=16, seed=3, extra_fields=("id",)),
        6,
    )
    for b in batches:
        check_holes(b, source, train=True)
    # Present rows are what the complete data gives, crops included.
    full = take(
        pipeline.make_train_loader(source, batch_size=16, seed=3, extra_fields=("id",)),
        6,
    )
    for b, f in zip(batches, full, strict=True):
        np.testing.assert_array_equal(b["id"], f["id"])
        for m in MODS:
            has = b[modalities.presence_key(m)] == 1
            for k in modalities.get([m])[0].batch_keys:
                np.testing.assert_array_equal(b[k][has], f[k][has], k)


def test_presence_with_shards_padding_and_cache(holey, source):
    src = holey[:37]  # last eval batch padded
    kw = dict(batch_size=8, extra_fields=("id",))
    whole = list(pipeline.make_eval_batches(src, **kw))
    for b in whole:
        check_holes(b, source, train=False)
    assert sum(int(b["mask"].sum()) for b in whole) == 37
    shards = [
        list(pipeline.make_eval_batches(src, shard_index=p, shard_count=2, **kw))
        for p in range(2)
    ]
    for step, full in enumerate(whole):
        for k in full:
            got = np.concatenate([shards[0][step][k], shards[1][step][k]])
            np.testing.assert_array_equal(got, full[k], k)
    cached = list(pipeline.make_eval_batches(src, cache=True, **kw))
    assert_batches_equal(cached, whole)
    train_kw = dict(batch_size=16, seed=5, extra_fields=("id",))
    plain = take(pipeline.make_train_loader(holey, **train_kw), 4)
    cached = take(pipeline.make_train_loader(holey, cache=True, **train_kw), 4)
    assert_batches_equal(plain, cached)
    parts = [
        take(
            pipeline.make_train_loader(
                holey, shard_index=p, shard_count=2, cache=True, **train_kw
            ),
            4,
        )
        for p in range(2)
    ]
    for step, full in enumerate(plain):
        for k in full:
            got = np.concatenate([parts[0][step][k], parts[1][step][k]])
            np.testing.assert_array_equal(got, full[k], k)


def test_flags_for_what_the_data_set_may_lack_in_every_batch(source):
    # Only object 0 lacks a spectrum: spectra are flagged in every batch,
    # batches without a hole included; photometry and metadata never.
    src = [{**source[0], "spectra": None}, *source[1:20]]
    for cache in (False, True):
        batches = list(pipeline.make_eval_batches(src, batch_size=8, cache=cache))
        for k, b in enumerate(batches):
            flags = {key for key in b if modalities.is_presence_key(key)}
            assert flags == {"spectra_present"}
            np.testing.assert_array_equal(
                b["spectra_present"], b["mask"] * (np.arange(8) + 8 * k != 0)
            )


def test_cache_keeps_only_present_rows(holey):
    packed = source_reader.PackedSource.from_source(
        holey, ["spectra", "metadata", "photometry", "photometry_aux", "label"],
        ["photometry"],
    )  # fmt: skip
    spectra = packed.columns["spectra"]
    assert isinstance(spectra, modalities.Ragged)
    assert len(spectra.values) == sum("spectra" not in lacks(i) for i in range(48))
    assert packed[0]["spectra"].shape == (0, 3, 2575)  # object 0 lacks it
    assert packed[1]["spectra"].shape == (1, 3, 2575)


def test_batch_where_no_object_has_a_modality(holey, source):
    # Objects 0, 3, 6, 9 lack spectra; object 1 has one (it gives the shape).
    src = [holey[i] for i in (0, 3, 6, 9, 1)]
    b = next(iter(pipeline.make_eval_batches(src, batch_size=4, extra_fields=("id",))))
    assert b["spectra"].shape == (4, 3, 2575)
    np.testing.assert_array_equal(b["spectra"], 0)
    np.testing.assert_array_equal(b[modalities.presence_key("spectra")], 0)
    nowhere = [{**ex, "spectra": None} for ex in source[:8]]
    with pytest.raises(ValueError, match="no example of the source has field"):
        next(iter(pipeline.make_eval_batches(nowhere, batch_size=4)))


def test_an_optional_field_holds_at_most_one_row():
    col = modalities.Ragged.from_list(
        [np.zeros((0, 2)), np.ones((2, 2))], (2,), np.float32
    )
    with pytest.raises(ValueError, match="'x' holds 2 rows"):
        source_reader.fill_absent(col, "x")
    col = modalities.Ragged.from_list(
        [np.zeros((0, 2)), np.ones((1, 2))], (2,), np.float32
    )
    dense, present = source_reader.fill_absent(col)
    np.testing.assert_array_equal(dense, [[0, 0], [1, 1]])
    np.testing.assert_array_equal(present, [False, True])


@pytest.fixture(scope="module")
def holey_tfds(tmp_path_factory, holey):
    pytest.importorskip("tensorflow_datasets")
    from astrom3_jax.data.astrom3_tfds import examples_builder

    return examples_builder.examples_source(
        holey,
        data_dir=str(tmp_path_factory.mktemp("tfds_holes")),
        optional_modalities=MODS,
    )


def test_tfds_source_with_holes(holey_tfds, holey, source):
    features = holey_tfds.dataset_info.features
    assert features["spectra"].shape == (None, 3, 2575)
    assert features["photometry_aux"].shape == (None, 6)
    fields = ["id", "photometry", "photometry_aux", "spectra", "metadata", "label"]
    assert source_reader.optional_fields(holey_tfds, fields, ["photometry"]) == {
        "photometry_aux", "spectra", "metadata"
    }  # fmt: skip
    decoder = example_decoder.ExampleDecoder(features, fields)
    raw = holey_tfds.data_source.__getitems__(list(range(len(holey_tfds))))
    for k, record in enumerate(raw):
        fast, ref = decoder._decode_fast(record), holey_tfds[k]
        i = int(ref["id"])
        assert len(ref["spectra"]) == ("spectra" not in lacks(i))
        assert len(ref["metadata"]) == ("metadata" not in lacks(i))
        assert len(ref["photometry_aux"]) == ("photometry" not in lacks(i))
        for f in fields:
            np.testing.assert_array_equal(fast[f], ref[f], err_msg=f)
            assert np.asarray(fast[f]).shape == np.asarray(ref[f]).shape, f
    by_id = [holey[int(ex["id"])] for ex in holey_tfds]
    kw = dict(batch_size=16, seed=4, extra_fields=("id",))
    got = take(pipeline.make_train_loader(holey_tfds, **kw), 3)
    want = take(pipeline.make_train_loader(by_id, **kw), 3)
    assert_batches_equal(got, want)
    cached = take(pipeline.make_train_loader(holey_tfds, cache=True, **kw), 3)
    assert_batches_equal(cached, want)
    for b in got:
        check_holes(b, source, train=True)
