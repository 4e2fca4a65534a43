"""The input pipeline read through the real builder, on its dummy release.

The other pipeline tests use stand-in sources; this one checks that what the
builder writes is what the pipeline serves, row for row. The `data_dir`
fixture (tests/conftest.py) is full_42 built from dummy_data.
"""

import numpy as np

from astrom3_jax.data import pipeline

SEQ = 200


def _expected_row(example):
    """Centre crop / zero pad of the stored curve plus tiled aux, by hand."""
    curve, aux = example["photometry"], example["photometry_aux"]
    n = len(curve)
    start = (n - SEQ) // 2 if n > SEQ else 0
    rows = curve[start : start + SEQ]
    out = np.zeros((SEQ, 9), np.float32)
    out[: len(rows), :3] = rows
    out[:, 3:] = aux  # aux channels sit on padding rows too
    mask = np.zeros(SEQ, np.float32)
    mask[: len(rows)] = 1
    return out, mask


def test_eval_batches_match_stored_examples(data_dir):
    source = pipeline.open_tfds_source(
        "validation", config="full_42", data_dir=data_dir
    )
    n = len(source)
    batches = list(
        pipeline.make_eval_batches(source, batch_size=4, extra_fields=("id",))
    )
    assert len(batches) == -(-n // 4)
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert rows["mask"].sum() == n and not rows["mask"][n:].any()
    for i in range(n):
        ex = source[i]
        photometry, mask = _expected_row(ex)
        np.testing.assert_array_equal(rows["photometry"][i], photometry)
        np.testing.assert_array_equal(rows["photometry_mask"][i], mask)
        np.testing.assert_array_equal(rows["spectra"][i], ex["spectra"])
        np.testing.assert_array_equal(rows["metadata"][i], ex["metadata"])
        assert rows["label"][i] == ex["label"]
        assert rows["id"][i] == ex["id"]


def test_train_loader_crops_come_from_the_stored_curve(data_dir):
    source = pipeline.open_tfds_source("train", config="full_42", data_dir=data_dir)
    curves = {
        bytes(source[i]["id"]): source[i]["photometry"] for i in range(len(source))
    }
    loader = pipeline.make_train_loader(
        source, batch_size=8, seed=3, num_epochs=1, extra_fields=("id",)
    )
    seen = 0
    for batch in loader:
        for b in range(8):
            curve = curves[bytes(batch["id"][b])]
            real = int(batch["photometry_mask"][b].sum())
            assert real == min(len(curve), SEQ)
            window = batch["photometry"][b, :real, :3]
            # The window is a contiguous run of the stored curve.
            starts = np.flatnonzero(curve[:, 0] == window[0, 0])
            assert any(np.array_equal(curve[s : s + real], window) for s in starts), (
                "crop is not a window of the stored curve"
            )
            seen += 1
    assert seen == (len(source) // 8) * 8
