"""store.SplitWriter: a split written chunk by chunk is the split written at
once, byte for byte, checked against the arrays written at once with plain
NumPy (tests/helpers/exports.py: what save_split wrote before it streamed)
and against save_split."""

import numpy as np
import pytest

from astrom3_jax.analysis import store
from tests.helpers.exports import save_at_once

MODALITIES = ("photometry", "spectra", "metadata")


def _data(n=23, d=5, c=4, seed=0):
    """Embeddings of three modalities (spectra and metadata absent on some
    rows: NaN there), logits and index columns, ids of varying length."""
    rng = np.random.default_rng(seed)
    present = {
        "photometry": np.ones(n, bool),
        "spectra": rng.uniform(size=n) < 0.6,
        "metadata": rng.uniform(size=n) < 0.8,
    }
    emb = {m: rng.normal(size=(n, d)) * (i + 1) for i, m in enumerate(MODALITIES)}
    for m in MODALITIES:
        emb[m][~present[m]] = np.nan
    index = {
        "id": np.asarray([f"star-{i * 37 ** (i % 4)}" for i in range(n)]),
        "name": np.asarray([f"N{i}" for i in range(n)]),
        "label": rng.integers(0, c, size=n),
        "has_label": rng.uniform(size=n) < 0.9,
        **{store.presence_column(m): present[m] for m in MODALITIES},
    }
    return emb, index, rng.normal(size=(n, c)).astype(np.float32)


def _chunks(emb, index, logits, bounds):
    for a, b in zip(bounds, bounds[1:], strict=False):
        yield {
            "embeddings": {m: x[a:b] for m, x in emb.items()},
            "index": {k: v[a:b] for k, v in index.items()},
            "logits": logits[a:b],
        }


@pytest.mark.parametrize(
    "bounds", [(0, 23), (0, 1, 2, 3, 10, 23), (0, 5, 5, 17, 23)], ids=str
)
def test_chunks_written_equal_the_splitsave_at_once(tmp_path, bounds):
    emb, index, logits = _data()
    save_at_once(tmp_path / "want" / "test", emb, index, logits)
    with store.SplitWriter(tmp_path / "got", "test") as writer:
        for chunk in _chunks(emb, index, logits, bounds):
            writer.add(**chunk)
    store.save_split(tmp_path / "whole", "test", embeddings=emb, index=index,
                     logits=logits)  # fmt: skip
    for name in (*MODALITIES, "fused", "logits"):
        want = (tmp_path / "want" / "test" / f"{name}.npy").read_bytes()
        got = (tmp_path / "got" / "test" / f"{name}.npy").read_bytes()
        assert got == want, name
        assert (tmp_path / "whole" / "test" / f"{name}.npy").read_bytes() == want
    assert sorted(p.name for p in (tmp_path / "got" / "test").iterdir()) == sorted(
        [f"{m}.npy" for m in MODALITIES] + ["fused.npy", "logits.npy", "index.npz"]
    )  # no partial files left
    with np.load(tmp_path / "got" / "test" / "index.npz") as z:
        assert list(z.files) == list(index)
        for key, col in index.items():
            np.testing.assert_array_equal(z[key], col, err_msg=key)
            assert z[key].dtype == (np.int64 if key == "label" else col.dtype), key
    split = store.load_split(tmp_path / "got", "test")
    np.testing.assert_array_equal(split.present("spectra"), index["spectra_present"])


def test_npy_header_grows_with_the_rows(tmp_path):
    """The appended file's header says the final row count: 0, one and a
    five-digit count of rows all read back as np.save writes them."""
    for n in (0, 1, 12345):
        x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        app = store._Appender(tmp_path / f"x{n}.npy", np.float32, 3)
        for a in range(0, n, 1000):
            app.append(x[a : a + 1000])
        app.finish()
        np.save(tmp_path / f"want{n}.npy", x)
        got = (tmp_path / f"x{n}.npy").read_bytes()
        assert got == (tmp_path / f"want{n}.npy").read_bytes()
        assert not (tmp_path / f"x{n}.npy.partial").exists()


def test_errors_name_the_row_of_the_split_and_leave_no_files(tmp_path):
    emb, index, logits = _data()
    emb["photometry"][12, 2] = np.inf
    writer = store.SplitWriter(tmp_path, "t")
    chunks = list(_chunks(emb, index, logits, (0, 10, 23)))
    writer.add(**chunks[0])
    with pytest.raises(ValueError, match=r"non-finite value in row 12 \(object"):
        writer.add(**chunks[1])
    writer.abort()
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == []
    # A later chunk unlike the first (no logits) is refused.
    emb, index, logits = _data()
    writer = store.SplitWriter(tmp_path, "u")
    first, second = _chunks(emb, index, logits, (0, 10, 23))
    writer.add(**first)
    with pytest.raises(ValueError, match="rows from 10 on"):
        writer.add(**dict(second, logits=None))
    writer.abort()
    with pytest.raises(ValueError, match="no embeddings given"):
        store.SplitWriter(tmp_path, "v").close()
    # Within `with`, an error removes the partial files.
    with pytest.raises(RuntimeError), store.SplitWriter(tmp_path, "w") as writer:
        writer.add(**first)
        raise RuntimeError("stop")
    assert list((tmp_path / "w").iterdir()) == []


def test_a_rewritten_split_without_logits_loses_the_old_ones(tmp_path):
    emb, index, logits = _data()
    store.save_split(tmp_path, "s", embeddings=emb, index=index, logits=logits)
    with store.SplitWriter(tmp_path, "s") as writer:
        for chunk in _chunks(emb, index, logits, (0, 7, 23)):
            writer.add(**dict(chunk, logits=None))
    assert store.load_split(tmp_path, "s").logits is None
