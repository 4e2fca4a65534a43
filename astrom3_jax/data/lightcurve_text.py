"""Splits a text light-curve table into named columns of text cells.

Recognised from the text itself, with no format guessing by astropy: `#`
comment lines (anywhere), an optional header line (the first non-comment
line none of whose cells is a number, or else a last `#` line just before
the data with one name per column), and the delimiter (tab, comma,
semicolon, `|` or runs of whitespace). A table without a header has three
columns read as time, mag, mag_err unless the caller names its columns.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence

DELIMITERS = ("\t", ",", ";", "|")
WHITESPACE = " "
COMMENT = "#"
HEADERLESS = ("time", "mag", "mag_err")
NAME_HINT = (
    "name the file's columns in the catalogue's lc_columns cell "
    "(e.g. time,mag,mag_err,band)"
)


class LayoutError(ValueError):
    """The text cannot be split into a table; one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class TextTable:
    """Named columns of text cells; `lines` gives each row's 1-based line."""

    names: tuple[str, ...]
    columns: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]
    header: str  # 'header' | 'comment' (a `#` line) | 'named' | 'none'
    delimiter: str

    def __len__(self) -> int:
        return len(self.lines)


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == WHITESPACE:
        return line.split()
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]


def _split_all(lines: list[str], delimiter: str) -> list[list[str]]:
    if delimiter == WHITESPACE:
        return [line.split() for line in lines]
    return [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delimiter)]


def _sniff(first: str, second: str | None) -> str:
    """The delimiter that splits `first` (and `second`, when there is one)
    into the same number (>= 2) of cells; whitespace otherwise."""
    for d in DELIMITERS:
        if d not in first:
            continue
        n = len(_split(first, d))
        if n >= 2 and (second is None or len(_split(second, d)) == n):
            return d
    return WHITESPACE


def _is_header(cells: Sequence[str]) -> bool:
    return not any(is_number(c.lstrip("<>")) for c in cells if c)


def parse_names(spec: str) -> tuple[str, ...]:
    """An lc_columns cell ('time,mag,mag_err' or 'time mag mag_err')."""
    d = "," if "," in spec else WHITESPACE
    names = tuple(n.strip() for n in _split(spec, d))
    if not names or not all(names):
        raise LayoutError(
            f"lc_columns {spec!r} has a blank name; use '-' for a column to skip"
        )
    return names


def parse_text_table(text: str, names: Sequence[str] | None = None) -> TextTable:
    """The table in `text`; `names` (lc_columns) replace any header."""
    content = []  # (line number, text) of non-blank, non-comment lines
    comment, comment_before = None, None  # the `#` line just before the first
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(COMMENT):
            comment = stripped.lstrip(COMMENT).strip()
            continue
        if not content:
            comment_before = comment
        content.append((number, line))
    if not content:
        raise LayoutError(
            "holds no table rows (empty, or only # comment lines); give the "
            "star's measurements, or leave its lightcurve cell blank"
        )
    first = content[0][1]
    second = content[1][1] if len(content) > 1 else None
    delimiter = _sniff(first, second)
    head_cells = _split(first, delimiter)
    header, table_names, data = "none", None, content
    if _is_header(head_cells):
        header, table_names, data = "header", head_cells, content[1:]
    if not data:
        raise LayoutError("has a header but no data rows")
    rows = _split_all([line for _, line in data], delimiter)
    n_cols = len(rows[0])
    if table_names is None and comment_before:
        candidate = _split(comment_before, _sniff(comment_before, None))
        if len(candidate) == n_cols and _is_header(candidate):
            header, table_names = "comment", candidate
    if names is not None:
        if len(names) > n_cols:
            raise LayoutError(
                f"lc_columns names {len(names)} columns but the rows have "
                f"{n_cols}; give at most {n_cols} names"
            )
        header, table_names = "named", list(names)
    elif table_names is None:
        if n_cols != len(HEADERLESS):
            raise LayoutError(
                f"has no header line and {n_cols} columns (a table without a "
                f"header must have 3: time, mag, mag_err); add a header line or "
                f"{NAME_HINT}"
            )
        table_names = list(HEADERLESS)
    width = n_cols if header == "named" else len(table_names)
    for (number, _), cells in zip(data, rows, strict=True):
        while len(cells) > width and cells[-1] == "":  # a trailing delimiter
            cells.pop()
        if len(cells) != width:
            what = (
                "the header has"
                if header in ("header", "comment")
                else (f"line {data[0][0]} has")
            )
            raise LayoutError(
                f"line {number} has {len(cells)} columns where {what} {width}; "
                "fix the line (or the delimiter)"
            )
    cols = tuple(zip(*rows, strict=True))[: len(table_names)]
    return TextTable(
        names=tuple(table_names),
        columns=tuple(tuple(c) for c in cols),
        lines=tuple(number for number, _ in data),
        header=header,
        delimiter=delimiter,
    )
