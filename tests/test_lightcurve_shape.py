"""The test-split copies of benchmarks/lightcurve_shape.py.

The shuffle must move each object's (flux, error) pairs among its own time
stamps and nothing else; the window shuffle must move exactly the rows the
evaluation's centre crop reads; the two retraining copies must blank only
what they say. No model is trained here (test_benchmarks.py runs the script
at a tiny size).
"""

import numpy as np

from astrom3_jax.data import pipeline
from benchmarks import lightcurve_shape as ls

SEQ_LEN = 16
LENGTHS = (5, 16, 23, 40)  # shorter than, equal to and longer than the crop


def packed():
    rng = np.random.default_rng(7)
    rows = []
    for i, n in enumerate(LENGTHS):
        t = np.sort(rng.uniform(0, 1, n))
        values = rng.normal(size=(n, 2))
        rows.append(
            {
                "photometry": np.column_stack([t, values]).astype(np.float32),
                "photometry_aux": rng.normal(size=6).astype(np.float32),
                "label": i % 3,
                "id": f"star{i}".encode(),
            }
        )
    return ls.pack(rows)


def curves(p):
    return ls._curves(p)


def sorted_pairs(curve):
    return curve[np.lexsort(curve[:, 1:].T[::-1])][:, 1:]


def test_shuffle_permutes_each_curve_and_keeps_times_and_aux():
    before = packed()
    after = ls.shuffled(before, draw=0)
    for k in ("photometry_aux", "label", "id"):
        np.testing.assert_array_equal(after.columns[k], before.columns[k])
    for a, b in zip(curves(after), curves(before), strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a[:, 0], b[:, 0])  # times unchanged
        # the same (flux, error) pairs, moved together ...
        np.testing.assert_array_equal(sorted_pairs(a), sorted_pairs(b))
        # ... to other time stamps
        moved = np.mean(np.any(a[:, 1:] != b[:, 1:], axis=1))
        assert moved > 0.5, moved
    again = curves(ls.shuffled(before, draw=0))
    other = curves(ls.shuffled(before, draw=1))
    for a, b, c in zip(curves(after), again, other, strict=True):
        np.testing.assert_array_equal(a, b)  # a draw is reproducible
        assert np.any(a != c)  # another draw is another permutation


def test_window_shuffle_moves_only_the_rows_the_model_reads():
    before = packed()
    after = ls.shuffled(before, draw=0, seq_len=SEQ_LEN)
    for n, a, b in zip(LENGTHS, curves(after), curves(before), strict=True):
        lo, hi = ls.shuffle_window(n, SEQ_LEN)
        assert hi - lo == min(n, SEQ_LEN)
        np.testing.assert_array_equal(a[:lo], b[:lo])
        np.testing.assert_array_equal(a[hi:], b[hi:])
        np.testing.assert_array_equal(a[:, 0], b[:, 0])
        assert np.any(a[lo:hi] != b[lo:hi])

    def batch(p):
        return next(
            iter(
                pipeline.make_eval_batches(
                    p, batch_size=8, modalities=("photometry",), seq_len=SEQ_LEN
                )
            )
        )

    got, want = batch(after), batch(before)
    np.testing.assert_array_equal(got["photometry_mask"], want["photometry_mask"])
    x, y = got["photometry"], want["photometry"]
    np.testing.assert_array_equal(x[..., 0], y[..., 0])  # times
    np.testing.assert_array_equal(x[..., 3:], y[..., 3:])  # the six aux numbers
    for i, n in enumerate(LENGTHS):
        real = want["photometry_mask"][i] > 0
        assert real.sum() == min(n, SEQ_LEN)
        # the evaluation crop holds the same values as before, reordered
        np.testing.assert_array_equal(
            sorted_pairs(x[i][real][:, :3]), sorted_pairs(y[i][real][:, :3])
        )
        assert np.any(x[i][real][:, 1:3] != y[i][real][:, 1:3])


def test_retraining_copies_blank_only_what_they_say():
    before = packed()
    no_aux = ls.without_aux(before)
    assert not np.any(no_aux.columns["photometry_aux"])
    for a, b in zip(curves(no_aux), curves(before), strict=True):
        np.testing.assert_array_equal(a, b)
    no_values = ls.without_values(before)
    np.testing.assert_array_equal(
        no_values.columns["photometry_aux"], before.columns["photometry_aux"]
    )
    for a, b in zip(curves(no_values), curves(before), strict=True):
        np.testing.assert_array_equal(a[:, 0], b[:, 0])
        assert not np.any(a[:, 1:])
    # the copies leave the original alone
    assert np.any(before.columns["photometry_aux"])
    assert all(np.any(c[:, 1:]) for c in curves(before))


def test_paired_statistics():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    a = np.array([0, 1, 2, 0, 1, 2, 1, 1])  # 7 right
    b = np.array([0, 0, 0, 0, 1, 1, 0, 1])  # 5 right
    got = ls.mcnemar(a, b, labels)
    assert (got["only_first_right"], got["only_second_right"]) == (3, 1)
    assert abs(got["p"] - 0.625) < 1e-12  # two-sided binomial, 1 of 4
    lo, hi = ls.bootstrap_difference(a == labels, b == labels, n=2000)
    assert lo < 2 / 8 < hi
    assert ls.encode([0, 9, 10, 35]) == "09AZ"
    np.testing.assert_array_equal(ls.decode(ls.encode(a)), a)
