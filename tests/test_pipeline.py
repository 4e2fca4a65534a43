"""Input pipeline: crops, padding, shuffling, shards, resume, eval padding."""

import json

import numpy as np
import pytest

from astrom3_jax.data import modalities, pipeline

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
    assert set(b) == keys | {"label", "mask"}


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
    decoder = pipeline.ExampleDecoder(tfds_source.dataset_info.features, fields)
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
