"""Normalisation statistics: the training split's mean and std of the catalogue.

A model only makes sense with the statistics of the data it was trained on,
so they travel with it: next to every prepared data set, in every training
workdir (`normalisation.json`), and from `info.json` for published weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import preprocessing, release_io, schema

STATS_FILE = "normalisation.json"
FORMAT = "astrom3_jax normalisation statistics"
VERSION = 1


class MissingStatsError(errors.UserError, FileNotFoundError):
    """A model or data set without recorded normalisation statistics."""


class StatsError(errors.UserError, ValueError):
    """Statistics that cannot be used (wrong columns, zero std, bad file)."""


def _how_to_provide(workdir: str) -> str:
    return (
        "Record the statistics of the data the model was trained on:\n"
        f"  python -m astrom3_jax.record_stats --workdir {workdir} "
        "--info_json RELEASE/splits/<subset>/<seed>/info.json\n"
        "(the release configuration's info.json, for published weights), or\n"
        f"  python -m astrom3_jax.record_stats --workdir {workdir} "
        "--dataset <config> [--data_dir D]\n"
        "(a data set prepared with python -m tfds_builders.build)."
    )


@dataclasses.dataclass(frozen=True)
class NormalisationStats:
    """Column transforms plus the training split's mean and population std.

    The 38 catalogue columns (4 photometric ones that become light-curve
    channels, 34 metadata ones) are transformed (absolute magnitudes, cos l,
    sin b, log10 period) and then z-scored with the mean and population std
    of the TRAINING split. mean/std are in `all_cols` order (photo_cols then
    meta_cols), computed after the `metadata_func` transforms. `source` says
    where they came from (for messages and provenance only).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    all_cols: tuple[str, ...] = schema.ALL_COLS
    photo_cols: tuple[str, ...] = schema.PHOTO_COLS
    meta_cols: tuple[str, ...] = schema.META_COLS
    metadata_func: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: {k: tuple(v) for k, v in schema.METADATA_FUNC.items()}
    )
    classes: tuple[str, ...] = schema.CLASSES
    source: str = ""

    def __post_init__(self):
        problem = self.problem()
        if problem:
            where = f" from {self.source}" if self.source else ""
            raise StatsError(f"normalisation statistics{where}: {problem}")

    def problem(self) -> str:
        """'' when usable, else what is wrong."""
        n = len(self.all_cols)
        if len(self.mean) != n or len(self.std) != n:
            return f"mean/std have {len(self.mean)}/{len(self.std)} values, need {n}"
        if tuple(self.all_cols) != tuple(self.photo_cols) + tuple(self.meta_cols):
            return "all_cols is not photo_cols followed by meta_cols"
        missing = [c for c in schema.ALL_COLS if c not in self.all_cols]
        if missing:
            return f"no statistics for column(s) {', '.join(missing)}"
        std, mean = np.asarray(self.std, float), np.asarray(self.mean, float)
        bad = [
            c
            for c, m, s in zip(self.all_cols, mean, std, strict=True)
            if not (np.isfinite(m) and np.isfinite(s) and s > 0)
        ]
        if bad:
            return (
                "non-finite mean or non-positive std (a column blank in every "
                f"row of the training split, or constant in it?) for {', '.join(bad)}"
            )
        return ""

    # ------------------------------------------------------------ conversions
    def as_info(self) -> dict:
        """The info.json-style mapping preprocessing.normalise_catalogue reads."""
        return {
            "classes": list(self.classes),
            "photo_cols": list(self.photo_cols),
            "meta_cols": list(self.meta_cols),
            "all_cols": list(self.all_cols),
            "metadata_func": {k: list(v) for k, v in self.metadata_func.items()},
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
        }

    def to_json(self) -> str:
        """A superset of the release's `info.json` (same keys: classes,
        photo_cols, meta_cols, all_cols, metadata_func, mean, std; plus
        `format`, `version`, `source`), so either file can be read where the
        other is expected."""
        body = {"format": FORMAT, "version": VERSION, "source": self.source}
        return json.dumps({**body, **self.as_info()}, indent=2) + "\n"

    @classmethod
    def from_info(cls, info: Mapping, source: str = "") -> NormalisationStats:
        """From a mapping with info.json's keys (an info.json or our JSON)."""
        missing = [k for k in release_io.INFO_KEYS if k not in info]
        if missing:
            raise StatsError(
                f"normalisation statistics{f' in {source}' if source else ''} lack "
                f"key(s) {', '.join(missing)}"
            )
        return cls(
            mean=tuple(float(x) for x in info["mean"]),
            std=tuple(float(x) for x in info["std"]),
            all_cols=tuple(info["all_cols"]),
            photo_cols=tuple(info["photo_cols"]),
            meta_cols=tuple(info["meta_cols"]),
            metadata_func={k: tuple(v) for k, v in info["metadata_func"].items()},
            classes=tuple(info["classes"]),
            source=str(info.get("source") or source),
        )

    @classmethod
    def from_json(cls, text: str, source: str = "") -> NormalisationStats:
        try:
            info = json.loads(text)
        except json.JSONDecodeError as e:
            raise StatsError(f"{source or 'statistics'}: not JSON ({e})") from None
        if not isinstance(info, dict):
            raise StatsError(f"{source or 'statistics'}: not a JSON object")
        return cls.from_info(info, source)

    @classmethod
    def from_info_json(cls, path: str | os.PathLike) -> NormalisationStats:
        """From a release split folder's info.json (checked by release_io): where
        published weights take their statistics from."""
        info = release_io.read_info(path)
        return cls.from_info(info, source=os.fspath(path))

    @classmethod
    def from_table(
        cls,
        table: Mapping[str, np.ndarray],
        source: str = "",
        *,
        unit_for_blank: Sequence[str] = (),
    ) -> NormalisationStats:
        """Statistics of raw catalogue columns (name -> values of the train rows).

        Uses the release's transforms. Where a column has blank (NaN)
        values, its statistics are over the rows that have it (after the
        transforms); a table without NaN gives exactly what the release's
        info.json computation (preprocessing.catalogue_stats) gives.
        unit_for_blank: columns that may be blank in every row (a catalogue
        without metadata, or without rfr_score): those get mean 0, std 1,
        which leaves their values unscaled; any other all-blank column is an
        error.
        """
        missing = [c for c in schema.ALL_COLS if c not in table]
        if missing:
            raise StatsError(f"{source}: no values for {', '.join(missing)}")
        cols = {c: np.asarray(table[c], np.float64) for c in schema.ALL_COLS}
        if all(np.isfinite(v).all() for v in cols.values()):
            mean, std = preprocessing.catalogue_stats(cols)
        else:
            t = preprocessing.transform_catalogue(cols)
            mean, std = [], []
            for c in schema.ALL_COLS:
                v = t[c][np.isfinite(t[c])]
                if not v.size and c in unit_for_blank:
                    v = np.array([-1.0, 1.0])  # mean 0, population std 1
                mean.append(v.mean() if v.size else np.nan)
                std.append(v.std() if v.size else np.nan)
        return cls(
            mean=tuple(float(x) for x in mean),
            std=tuple(float(x) for x in std),
            source=source,
        )

    # ----------------------------------------------------------------- files
    def write(self, path: str | os.PathLike) -> str:
        path = os.fspath(path)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> NormalisationStats:
        path = os.fspath(path)
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            raise MissingStatsError(f"{path}: no normalisation statistics") from None
        except OSError as e:
            raise StatsError(f"{path}: unreadable ({e})") from None
        return cls.from_json(text, source=path)

    # --------------------------------------------------------------- helpers
    def column_slices(self) -> tuple[list[int], list[int]]:
        """Indices of schema.PHOTO_COLS and schema.META_COLS in all_cols."""
        cols = list(self.all_cols)
        return (
            [cols.index(c) for c in schema.PHOTO_COLS],
            [cols.index(c) for c in schema.META_COLS],
        )


def write_stats(workdir: str | os.PathLike, stats: NormalisationStats) -> str:
    """Records `stats` in a training workdir (workdir/normalisation.json)."""
    os.makedirs(workdir, exist_ok=True)
    return stats.write(os.path.join(workdir, STATS_FILE))


def read_stats(workdir: str | os.PathLike) -> NormalisationStats:
    """The statistics recorded in a workdir; refuses a workdir without them.

    `python -m astrom3_jax.record_stats --workdir W (--info_json
    RELEASE/splits/full/42/info.json | --dataset CONFIG [--data_dir D])`
    gives a workdir the statistics it lacks.
    """
    workdir = os.fspath(workdir)
    path = os.path.join(workdir, STATS_FILE)
    if not os.path.exists(path):
        raise MissingStatsError(
            f"{workdir} holds no normalisation statistics ({STATS_FILE}): the "
            "model's catalogue and light-curve inputs cannot be normalised as in "
            "its training.\n" + _how_to_provide(workdir)
        )
    return NormalisationStats.read(path)


def stats_of_prepared(data_dir: str | os.PathLike) -> NormalisationStats:
    """The statistics a prepared data set's builder recorded: `data_dir` is its
    version folder (`<TFDS data_dir>/astrom3/<config>/<version>`), which holds
    `normalisation.json`."""
    path = os.path.join(os.fspath(data_dir), STATS_FILE)
    if not os.path.exists(path):
        raise MissingStatsError(
            f"{data_dir} holds no {STATS_FILE} (prepared before the builder "
            "recorded statistics); rebuild it with --overwrite, or record the "
            "statistics from the release's info.json."
        )
    return NormalisationStats.read(path)
