"""Pieces every analysis shares: lazy imports, cosine helpers, file writers, CLI."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import pathlib
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from astrom3_jax.analysis import store

INSTALL_HINT = "pip install -e '.[analysis]'"
_PACKAGE_OF = {"sklearn": "scikit-learn", "umap": "umap-learn"}


def require(module: str, purpose: str):
    """Imports a heavy optional library on first use, naming the extra if absent."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        package = _PACKAGE_OF.get(top, top)
        raise ImportError(
            f"{purpose} needs {package}, part of the 'analysis' extra: {INSTALL_HINT}"
        ) from err


def embedding_keys(split: store.Split) -> list[str]:
    """The modalities, then 'fused'."""
    return [*split.modalities, store.FUSED]


def unit_embeddings(split: store.Split) -> dict[str, np.ndarray]:
    """Every embedding of a split as unit rows (float64)."""
    return {key: split.unit(key) for key in embedding_keys(split)}


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities of unit rows: a @ b.T."""
    return np.asarray(a, np.float64) @ np.asarray(b, np.float64).T


def descending_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score, highest first; NaN ranks last; ties by order."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-key, kind="stable")
    ranks = np.empty(len(scores), np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def jsonable(obj):
    """Nested dicts/lists with NumPy scalars made plain and NaN made null."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: pathlib.Path, obj) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(obj), indent=2) + "\n")
    return path


def write_csv(path: pathlib.Path, columns: Mapping[str, Sequence]) -> pathlib.Path:
    """Writes equal-length columns as a CSV with a header row."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*cols, strict=True):
            writer.writerow([_cell(v) for v in row])
    return path


def _cell(value):
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{float(value):.6g}"
    return value.item() if isinstance(value, np.generic) else value


def object_columns(split: store.Split, rows: np.ndarray | None = None) -> dict:
    """id, name, label name and any ground truth, for CSV output."""
    rows = np.arange(len(split)) if rows is None else rows
    cols = {
        "id": split.index["id"][rows],
        "name": split.index["name"][rows],
        "label": split.label_names[rows],
    }
    for key in ("true_target", "subtype"):
        if key in split.index:
            cols[key] = split.index[key][rows]
    return cols


def fmt(value, digits: int = 3) -> str:
    """A number for printed tables ('-' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every analysis takes."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    p.add_argument("--embeddings", required=True, help="export folder (store.py)")
    p.add_argument("--out", required=True, help="folder for the output files")
    return p


def load(export_dir, split: str, *, required: bool = True) -> store.Split | None:
    """One split of an export; None if absent and not required."""
    path = pathlib.Path(export_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: export folder not found")
    if (path / split / store.INDEX).is_file():
        return store.load_split(path, split)
    if required:
        raise FileNotFoundError(
            f"{path}: export has no {split!r} split (has {store.list_splits(path)})"
        )
    return None


USER_ERRORS = (FileNotFoundError, ValueError, KeyError, ImportError)


def entry(main) -> int:
    """Runs a command's main(); a user error (missing file, bad input,
    missing extra) prints as one line and exits 2 instead of a traceback."""
    try:
        return main()
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
