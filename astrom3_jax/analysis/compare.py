"""Side-by-side Markdown table of report summaries (e.g. pre-trained vs random).

    python -m astrom3_jax.analysis.compare A/summary.json B/summary.json \\
        [--names pretrained random] [--out table.md]

With exactly two summaries, a last column gives the first minus the second.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections.abc import Mapping, Sequence

from astrom3_jax.analysis import _common


def flatten(summary: Mapping, prefix: str = "") -> dict[str, float | None]:
    """Numeric leaves (and nulls) of a nested summary, keyed 'a.b.c'; the
    'export' block is description, not numbers, and is skipped."""
    out = {}
    for key, value in summary.items():
        if not prefix and key == "export":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif value is None or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        ):
            out[name] = value
    return out


def markdown(summaries: Sequence[Mapping], names: Sequence[str]) -> str:
    """One row per headline number, one column per summary (union of rows,
    first-seen order; '-' where a summary lacks the number).

    Rows are the numeric headline entries, named by their path in the summary
    (e.g. 'accuracy.fused.probe'). With exactly two summaries a last column
    gives the difference first minus second (with [pretrained, control], a
    positive number is what training gained), as the notebooks' tables do.
    """
    if len(summaries) != len(names):
        raise ValueError(f"{len(summaries)} summaries but {len(names)} names")
    flat = [flatten(s) for s in summaries]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    headers = ["metric", *names]
    two = len(flat) == 2
    if two:
        headers.append(f"{names[0]} - {names[1]}")
    rows = []
    for key in keys:
        values = [f.get(key) for f in flat]
        row = [key, *values]
        if two:
            a, b = values
            ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b))
            row.append(a - b if ok else None)
        rows.append(row)
    return _common.markdown_table(headers, rows)


def read_summary(path) -> dict:
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such summary") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m astrom3_jax.analysis.compare",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("summaries", nargs="+", help="summary.json files or report folders")
    p.add_argument("--names", nargs="*", default=None, help="column names")
    p.add_argument("--out", default=None, help="also write the table here")
    args = p.parse_args(argv)
    names = args.names or [str(s) for s in args.summaries]
    table = markdown([read_summary(s) for s in args.summaries], names)
    print(table)
    if args.out:
        pathlib.Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
