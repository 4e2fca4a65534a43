"""predictions.csv written chunk by chunk is the file of every row written at
once with csv.DictWriter (columns in first-seen order, blank where a row
lacks one), whatever the chunks; the rows read back are the rows written."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from astrom3_jax.prediction import writing


def _rows():
    """Rows whose columns grow as they go: 'mislabel_score' only where a
    label is given, a column first seen in the last row; text that needs
    quoting, numbers and None."""
    rows = []
    for i in range(11):
        row = {"id": f"s{i}", "name": f'a, "b" {i}\nc', "n_points": i * 7}
        row["score"] = 0.1 * i if i % 3 else None
        if i % 4 == 2:
            row["mislabel_score"] = f"{i / 10:.3f}"
        rows.append(row)
    rows[-1] = {"late": "x", **rows[-1]}  # a new column first in its row
    return rows


def _at_once(path, rows):
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize(
    "bounds", [(0, 11), (0, 1, 2, 3, 4, 11), (0, 3, 3, 6, 10, 11)], ids=str
)
def test_table_in_chunks_equals_the_table_at_once(tmp_path, bounds):
    rows = _rows()
    _at_once(tmp_path / "want.csv", rows)
    table = writing._Table(str(tmp_path / "got.csv"))
    for a, b in zip(bounds, bounds[1:], strict=False):
        table.add(rows[a:b])
    table.close()
    want = (tmp_path / "want.csv").read_bytes()
    assert (tmp_path / "got.csv").read_bytes() == want
    assert not (tmp_path / "got.csv.partial").exists()
    got = writing.CsvRows(str(tmp_path / "got.csv"), table.rows)
    with open(tmp_path / "want.csv", newline="") as f:
        assert list(got) == list(csv.DictReader(f))
    assert len(got) == 11 and got[3]["n_points"] == "21" and got[-1]["late"] == "x"
    assert got[0]["mislabel_score"] == "" and got[2]["mislabel_score"] == "0.200"


def test_neighbour_lines_streamed_equal_writing_them_at_once(tmp_path):
    rows = [
        {"id": f"s{i}", "rank": r, "neighbour_id": f"r{r}", "neighbour_label": "EW",
         "cosine": f"{0.5 + r / 10:.6f}"}
        for i in range(5) for r in (1, 2)
    ]  # fmt: skip
    lines = writing._Lines(str(tmp_path / "got.csv"), writing.NEIGHBOURS_COLUMNS)
    lines.add(rows[:3])
    lines.add(rows[3:])
    assert not (tmp_path / "got.csv").exists()  # in place only when finished
    lines.close()
    with open(tmp_path / "want.csv", "w", newline="") as f:
        w = csv.DictWriter(f, writing.NEIGHBOURS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    assert (tmp_path / "got.csv").read_bytes() == (tmp_path / "want.csv").read_bytes()


def test_a_process_that_writes_nothing_keeps_its_chunks_for_its_result():
    """writing.Kept (processes other than the first): the Result's arrays
    are the chunks joined in order, its rows the chunks' rows."""
    rng = np.random.default_rng(0)
    chunks = [
        SimpleNamespace(
            ids=np.asarray([f"s{i}" for i in range(a, b)]),
            present={"photometry": rng.uniform(size=b - a) < 0.5},
            embeddings={"photometry": rng.normal(size=(b - a, 3))},
            logits=rng.normal(size=(b - a, 2)),
        )
        for a, b in ((0, 4), (4, 9))
    ]
    kept = writing.Kept()
    for ran in chunks:
        kept.add(ran, [{"id": str(x)} for x in ran.ids], None)
    kept.close()
    got = kept.result(["photometry"])
    assert list(got["ids"]) == [f"s{i}" for i in range(9)]
    assert [r["id"] for r in got["rows"]] == list(got["ids"])
    for key in ("present", "embeddings"):
        np.testing.assert_array_equal(
            got[key]["photometry"],
            np.concatenate([getattr(r, key)["photometry"] for r in chunks]),
        )
    np.testing.assert_array_equal(
        got["logits"], np.concatenate([r.logits for r in chunks])
    )
