"""On-disk format of exported embeddings: one folder per export, NumPy only.

An export holds the frozen encoders' embeddings of every object of a data
set, so the analyses run without JAX or a model. `SplitWriter` (chunk by
chunk, as export and predict produce the rows), `save_split` (all at once)
and `write_manifest` write it, `load_split` reads it; docs/design.md has the
layout.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import re

import numpy as np

__all__ = [
    "FUSED",
    "Split",
    "SplitWriter",
    "list_splits",
    "load_split",
    "presence_column",
    "read_manifest",
    "save_split",
    "write_manifest",
]

FUSED = "fused"
MANIFEST = "manifest.json"
INDEX = "index.npz"
LOGITS = "logits.npy"
REQUIRED_INDEX = ("id", "name", "label")
STRING_INDEX = ("id", "name", "true_target", "subtype")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED = (FUSED, "logits", "index")


@dataclasses.dataclass
class Split:
    """One split of an export: embeddings (modalities, then 'fused'), index
    columns, logits (or None) and the class names labels index into."""

    name: str
    embeddings: dict[str, np.ndarray]
    index: dict[str, np.ndarray]
    logits: np.ndarray | None
    class_names: list[str] | None

    def __len__(self) -> int:
        return len(self.index["id"])

    @property
    def modalities(self) -> list[str]:
        """The encoder modalities, without 'fused'."""
        return [k for k in self.embeddings if k != FUSED]

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"]

    @property
    def label_names(self) -> np.ndarray:
        """Class name of each object's label (str(label) without class_names)."""
        if self.class_names is None:
            return self.labels.astype(str)
        _check_labels(self.labels, self.class_names, self.index["id"], self.name)
        return np.asarray(self.class_names)[self.labels]

    @property
    def has_truth(self) -> bool:
        return "true_target" in self.index

    def mislabelled(self) -> np.ndarray:
        """True where the catalogue label differs from the ground-truth class."""
        if not self.has_truth:
            raise ValueError(f"split {self.name!r} has no true_target column")
        return self.label_names != self.index["true_target"]

    def present(self, modality: str) -> np.ndarray:
        """True where the object has `modality` (every row for 'fused')."""
        col = self.index.get(presence_column(modality))
        return np.ones(len(self), bool) if col is None else col.astype(bool)

    def unit(self, key: str) -> np.ndarray:
        """Row-normalised float64 copy of one embedding (use for 'fused')."""
        return normalise_rows(self.embeddings[key], f"{self.name}/{key}")


def normalise_rows(
    x: np.ndarray, what: str = "embeddings", ids: np.ndarray | None = None
) -> np.ndarray:
    """float64 rows scaled to unit L2 norm; a zero row is an error."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"{what}: row {_row(zero[0], ids)} has zero norm; cannot normalise it"
        )
    return x / norms


def _row(row: int, ids: np.ndarray | None, start: int = 0) -> str:
    """Row `row` of a chunk starting at row `start` of its split, named."""
    number = start + row
    return f"{number}" if ids is None else f"{number} (object {str(ids[row])!r})"


def _check_labels(labels, class_names, ids, where: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if bad.size:
        raise ValueError(
            f"{where}: label {int(labels[bad[0]])} of object {str(ids[bad[0]])!r} is "
            f"outside the {len(class_names)} class names"
        )


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(f"{what} {name!r} must be letters, digits, '_', '-', '.'")
    return name


def presence_column(modality: str) -> str:
    return f"{modality}_present"


def _check_finite(
    x: np.ndarray, what: str, ids: np.ndarray | None = None, absent=None, start=0
) -> None:
    """Finite values everywhere but on `absent` rows, which must be all NaN."""
    bad = ~np.isfinite(x)
    if absent is not None:
        bad[absent] = False
        if not np.isnan(x[absent]).all():
            row = np.flatnonzero(absent & ~np.isnan(x).all(axis=1))[0]
            raise ValueError(
                f"{what}: row {_row(row, ids, start)} is flagged absent but is not NaN"
            )
    if bad.any():
        row = np.argwhere(bad)[0][0]
        raise ValueError(f"{what}: non-finite value in row {_row(row, ids, start)}")


def _as_index(index: dict, n: int | None, where: str) -> dict[str, np.ndarray]:
    missing = [k for k in REQUIRED_INDEX if k not in index]
    if missing:
        raise ValueError(f"{where}: index lacks column(s) {missing}")
    n = len(index["id"]) if n is None else n
    out = {}
    for key, col in index.items():
        _check_name(key, f"{where}: index column")
        col = np.asarray(col)
        if col.ndim != 1 or len(col) != n:
            raise ValueError(
                f"{where}: index column {key!r} has shape {col.shape}, expected ({n},)"
            )
        if key in STRING_INDEX:
            col = col.astype(str)
        elif key == "label":
            if col.dtype.kind not in "iu" and not (
                col.dtype.kind == "f" and np.all(np.isfinite(col) & (col == col // 1))
            ):
                raise ValueError(f"{where}: label must be integers, got {col.dtype}")
            col = col.astype(np.int64)
        elif col.dtype == object:
            raise ValueError(f"{where}: index column {key!r} has object dtype")
        out[key] = col
    return out


def save_split(
    out_dir,
    split: str,
    *,
    embeddings: dict[str, np.ndarray],
    index: dict[str, np.ndarray],
    logits: np.ndarray | None = None,
) -> pathlib.Path:
    """Writes one split of an export (layout in docs/design.md).

    `embeddings` maps modality -> (N, D) array, all the same D; rows are
    L2-normalised here and stored as float32, and `fused.npy` (their mean,
    not re-normalised) is added. `index` needs id, name and label; every
    array must have N rows and finite values. Returns the split folder.
    `SplitWriter` with one chunk: the same checks and the same files.
    """
    with SplitWriter(out_dir, split) as writer:
        writer.add(embeddings=embeddings, index=index, logits=logits)
    return writer.folder


class _Appender:
    """One `.npy` file grown by appending rows, so that its rows never have
    to be in memory together.

    It is written under a temporary name: the header for 0 rows, then each
    block's raw bytes. `finish` rewrites the header with the final row
    count in place (NumPy pads every header so that the length of axis 0
    can grow without moving the data: np.lib.format.GROWTH_AXIS_MAX_DIGITS)
    and renames the file into place: byte for byte what `np.save` of the
    whole array writes.
    """

    def __init__(self, path: pathlib.Path, dtype, width: int):
        self.path, self.dtype, self.width = path, np.dtype(dtype), int(width)
        self.partial = path.with_name(path.name + ".partial")
        self.rows = 0
        self.file = open(self.partial, "wb")
        self.header_size = self.file.write(self._header())

    def _header(self) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.rows, self.width),
            },
        )
        return buf.getvalue()

    def append(self, block: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(block, self.dtype).tobytes())
        self.rows += len(block)

    def finish(self) -> None:
        header = self._header()
        if len(header) != self.header_size:  # NumPy < 1.23: no room to grow
            raise RuntimeError(f"{self.path}: the .npy header cannot grow in place")
        self.file.seek(0)
        self.file.write(header)
        self.file.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


class SplitWriter:
    """Writes one split of an export chunk by chunk: `add` each chunk of rows
    (in order), then `close`. What a caller holds at once is one chunk, not
    the split: export and predict hand it each batch as they fetch it.

    Each chunk gets `save_split`'s checks (errors number rows within the
    split) and its rows are normalised, fused and appended to the `.npy`
    files at once (`_Appender`: they are byte for byte `save_split`'s). The
    index columns (ids, names, labels, presence flags: tens of bytes per
    object) are kept in memory and written as `index.npz` at `close`, after
    the arrays are renamed into place. Used as a context manager it closes
    on success and removes its partial files on an error.
    """

    def __init__(self, out_dir, split: str):
        self.where = f"split {split!r}"
        _check_name(split, "split name")
        self.folder = pathlib.Path(out_dir) / split
        self.rows = 0
        self._files: dict[str, _Appender] = {}
        self._index: list[dict[str, np.ndarray]] = []
        self._shape: tuple | None = None  # (modalities, D, has logits, columns)

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def add(
        self,
        *,
        embeddings: dict[str, np.ndarray],
        index: dict[str, np.ndarray],
        logits: np.ndarray | None = None,
    ) -> None:
        """Appends the next rows: arguments as `save_split`'s, for this chunk."""
        where, start = self.where, self.rows
        if not embeddings:
            raise ValueError(f"{where}: no embeddings given")
        ids = np.asarray(index.get("id", ()))
        n = len(ids)
        units, here = {}, {}
        for modality, emb in embeddings.items():
            _check_name(modality, f"{where}: modality")
            if modality in _RESERVED:
                raise ValueError(f"{where}: modality name {modality!r} is reserved")
            emb = np.asarray(emb, np.float64)
            what = f"{where}, modality {modality!r}"
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(
                    f"{what}: shape {emb.shape}, expected ({n}, D) (N = ids)"
                )
            flags = index.get(presence_column(modality))
            here[modality] = (
                np.ones(n, bool) if flags is None else np.asarray(flags, bool)
            )
            emb = np.where(here[modality][:, None], emb, np.nan)
            _check_finite(emb, what, ids, absent=~here[modality], start=start)
            units[modality] = _unit_rows(emb, here[modality], what, ids, start)
        dims = {m: u.shape[1] for m, u in units.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"{where}: modalities differ in dimension {dims}")
        cols = _as_index(index, n, where)
        if logits is not None:
            logits = np.asarray(logits)
            if logits.ndim != 2 or logits.shape[0] != n:
                raise ValueError(
                    f"{where}: logits shape {logits.shape}, expected ({n}, C)"
                )
            _check_finite(logits, f"{where}, logits", ids, start=start)
        count = np.sum([h for h in here.values()], axis=0)
        if n and (count == 0).any():
            row = int(np.flatnonzero(count == 0)[0])
            raise ValueError(
                f"{where}: object {_row(row, ids, start)} has no modality at all"
            )
        total = np.sum(
            [np.where(here[m][:, None], u, 0.0) for m, u in units.items()], 0
        )
        fused = total / np.maximum(count, 1)[:, None]
        self._check_like_before(units, logits, cols)
        arrays = {**units, FUSED: fused}
        if logits is not None:
            arrays["logits"] = logits
        if not self._files:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name, x in arrays.items():
                path = self.folder / (LOGITS if name == "logits" else f"{name}.npy")
                self._files[name] = _Appender(path, np.float32, x.shape[1])
        for name, x in arrays.items():
            self._files[name].append(x.astype(np.float32))
        self._index.append(cols)
        self.rows += n

    def _check_like_before(self, units, logits, cols) -> None:
        """Every chunk has the first one's modalities, D, logits and columns."""
        shape = (
            sorted(units),
            next(iter(units.values())).shape[1],
            None if logits is None else logits.shape[1],
            sorted(cols),
        )
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            raise ValueError(
                f"{self.where}: rows from {self.rows} on have (modalities, D, "
                f"classes, index columns) {shape}, the rows before {self._shape}"
            )

    def close(self) -> pathlib.Path:
        """Finishes the files (index last); returns the split folder."""
        if not self._files:
            raise ValueError(f"{self.where}: no embeddings given")
        for appender in self._files.values():
            appender.finish()
        if "logits" not in self._files and (self.folder / LOGITS).exists():
            (self.folder / LOGITS).unlink()
        first = self._index[0]
        np.savez(
            self.folder / INDEX,
            **{k: np.concatenate([c[k] for c in self._index]) for k in first},
        )
        self._files, self._index = {}, []
        return self.folder

    def abort(self) -> None:
        """Removes the partial files (the split's finished files are kept)."""
        for appender in self._files.values():
            appender.discard()
        self._files, self._index = {}, []


def _unit_rows(emb, here, what: str, ids, start: int) -> np.ndarray:
    """`normalise_rows` of the `here` rows (NaN elsewhere); a zero row is an
    error naming its row of the split."""
    unit = np.full_like(emb, np.nan)
    x = emb[here]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        row = int(np.flatnonzero(here)[zero[0]])
        raise ValueError(
            f"{what}: row {_row(row, ids, start)} has zero norm; cannot normalise it"
        )
    unit[here] = x / norms
    return unit


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (pathlib.PurePath, tuple, set)):
        return str(value) if isinstance(value, pathlib.PurePath) else list(value)
    raise TypeError(f"manifest value {value!r} of type {type(value).__name__}")


def write_manifest(out_dir, **info) -> pathlib.Path:
    """Writes `<out_dir>/manifest.json` from keyword fields (source workdir,
    dataset, splits, modalities, class_names, embed_dim, step, ...)."""
    path = pathlib.Path(out_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(info, indent=2, default=_jsonable)
    except TypeError as err:
        raise ValueError(f"{path}: cannot write as JSON: {err}") from None
    path.write_text(text + "\n")
    return path


def read_manifest(out_dir) -> dict:
    """The manifest of an export as a dict."""
    path = pathlib.Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; is {out_dir} an export?")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return info


def list_splits(out_dir) -> list[str]:
    """Split folders of an export: the manifest's order, then any others."""
    root = pathlib.Path(out_dir)
    present = sorted(p.name for p in root.iterdir() if (p / INDEX).is_file())
    try:
        listed = [s for s in read_manifest(root).get("splits", []) if s in present]
    except FileNotFoundError:
        listed = []
    return listed + [s for s in present if s not in listed]


def _load_array(
    path: pathlib.Path, ids: np.ndarray, ndim_what: str, absent=None
) -> np.ndarray:
    n = len(ids)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read: {err}") from None
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{path}: shape {arr.shape}, expected ({n}, {ndim_what})")
    _check_finite(arr, str(path), ids, absent=absent)
    return arr


def load_split(out_dir, split: str) -> Split:
    """Reads one split written by `save_split` (checks shapes and values)."""
    root = pathlib.Path(out_dir)
    folder = root / split
    index_path = folder / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: no such split in export {root}")
    try:
        manifest = read_manifest(root)
    except FileNotFoundError:
        manifest = {}
    with np.load(index_path, allow_pickle=False) as npz:
        raw = {k: npz[k] for k in npz.files}
    index = _as_index(raw, None, str(index_path))
    modalities = manifest.get("modalities") or sorted(
        p.stem for p in folder.glob("*.npy") if p.stem not in _RESERVED
    )
    embeddings = {}
    for name in [*modalities, FUSED]:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (manifest lists {modalities})")
        flags = index.get(presence_column(name))
        absent = None if flags is None else ~flags.astype(bool)
        embeddings[name] = _load_array(path, index["id"], "D", absent)
    logits = None
    if (folder / LOGITS).is_file():
        logits = _load_array(folder / LOGITS, index["id"], "C")
    class_names = manifest.get("class_names")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        _check_labels(index["label"], class_names, index["id"], str(index_path))
    return Split(split, embeddings, index, logits, class_names)
