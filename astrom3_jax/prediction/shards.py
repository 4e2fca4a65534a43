"""A catalogue too big for one machine: predict it in shards, then merge.

Shard i of n is a contiguous block of the table's rows (rows keep their
numbers, so messages and bad_rows.csv name the real row); each shard is an
ordinary `predict` run into its own folder, on any machine, and its
manifest says which rows it holds. `merge` checks that the shards are of
one run and cover every row exactly once, each with all its rows written
or listed as bad, and concatenates them in row order.
"""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
from collections.abc import Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.analysis import store
from astrom3_jax.data.catalog import BAD_ROWS_FILE
from astrom3_jax.prediction.writing import NEIGHBOURS_FILE, PREDICTIONS_FILE, SPLIT

# Manifest fields every shard of one run must share.
SAME_RUN = ("source", "catalog", "reference", "k", "modalities", "class_names")


class ShardError(errors.UserError, ValueError):
    """Shards that cannot be merged: names the shard folder and the problem."""


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise errors.ConfigError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise errors.ConfigError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def shard_rows(n_rows: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count`: blocks differing by <= 1 row."""
    return index * n_rows // count, (index + 1) * n_rows // count


def _read_csv(path: pathlib.Path) -> tuple[list[str], list[dict]]:
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def _write_csv(path: pathlib.Path, columns: list[str], rows: list[dict]):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)


def _check(folders: Sequence[pathlib.Path]) -> list[tuple[pathlib.Path, dict]]:
    """The shards' manifests in row order, after checking they form one run."""
    shards = []
    for folder in folders:
        try:
            manifest = store.read_manifest(folder)
        except (OSError, ValueError) as e:
            raise ShardError(f"{folder}: not a predict output ({e})") from None
        if "shard" not in manifest:
            raise ShardError(f"{folder}: not a shard (predict without --shard)")
        shards.append((folder, manifest))
    if not shards:
        raise ShardError("no shard folders given")
    shards.sort(key=lambda s: s[1]["shard"])
    first = shards[0][1]
    count = first["num_shards"]
    for folder, m in shards:
        differ = [k for k in SAME_RUN if m.get(k) != first.get(k)]
        if m["num_shards"] != count:
            differ.append("num_shards")
        if differ:
            raise ShardError(
                f"{folder}: not of the same run as {shards[0][0]} (differs in "
                f"{', '.join(differ)})"
            )
    found = [m["shard"] for _, m in shards]
    if found != list(range(count)):
        missing = sorted(set(range(count)) - set(found))
        twice = sorted({i for i in found if found.count(i) > 1})
        raise ShardError(
            f"shards of {first['catalog']}: expected 0..{count - 1}; missing "
            f"{missing or 'none'}, given twice {twice or 'none'}"
        )
    stop = 0
    for folder, m in shards:
        start, end = m["rows"]
        if start != stop:
            raise ShardError(f"{folder}: holds rows {start}-{end}, expected {stop}-")
        stop = end
        _, rows = _read_csv(folder / PREDICTIONS_FILE)
        _, bad = _read_csv(folder / BAD_ROWS_FILE)
        if len(rows) + len(bad) != end - start:
            raise ShardError(
                f"{folder}: {len(rows)} predicted and {len(bad)} bad rows, but the "
                f"shard holds {end - start} rows (an interrupted run? rerun it)"
            )
    if stop != first["catalog_rows"]:
        raise ShardError(f"shards cover rows 0-{stop} of {first['catalog_rows']}")
    return shards


def merge(folders: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Writes into `out` what one predict over the whole catalogue writes;
    returns the merged manifest."""
    out = pathlib.Path(out)
    shards = _check([pathlib.Path(f) for f in folders])
    out.mkdir(parents=True, exist_ok=True)
    for name in (PREDICTIONS_FILE, NEIGHBOURS_FILE, BAD_ROWS_FILE):
        columns, rows, seen = [], [], False
        for folder, _ in shards:
            cols, part = _read_csv(folder / name)
            seen |= (folder / name).exists()
            columns += [c for c in cols if c not in columns]
            rows += part
        if seen:
            _write_csv(out / name, columns, rows)
    _merge_arrays([f / SPLIT for f, _ in shards], out / SPLIT)
    manifest = dict(shards[0][1])
    manifest["bad_rows"] = sum(m.get("bad_rows", 0) for _, m in shards)
    manifest["merged_from"] = [str(f) for f, _ in shards]
    for key in ("shard", "num_shards", "rows"):
        manifest.pop(key)
    store.write_manifest(out, **manifest)
    return manifest


def _merge_arrays(folders: list[pathlib.Path], out: pathlib.Path):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in sorted(folders[0].iterdir()):
        if path.suffix == ".npy":
            parts = [np.load(f / path.name) for f in folders]
            np.save(out / path.name, np.concatenate(parts))
        elif path.suffix == ".npz":
            loaded = [np.load(f / path.name) for f in folders]
            cols = {k: np.concatenate([z[k] for z in loaded]) for k in loaded[0].files}
            np.savez(out / path.name, **cols)
