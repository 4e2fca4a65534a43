"""The builder's examples as Apache Beam transforms, for builds past one machine.

The same rows and the same per-object code as the pool build (objects.py,
catalog_rows.py), so the records are the same; Beam only decides where each
object is parsed. A catalogue's normalisation statistics are a combine over
the train rows. Bad objects and absent modalities go to a notes file in the
data folder, which the builder reads after the pipeline (beam_notes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import apache_beam as beam
from etils import epath

from astrom3_jax.data import (
    catalog_rows,
    catalog_splits,
    catalog_tables,
    release_io,
    schema,
)
from astrom3_jax.data.astrom3_tfds import objects
from astrom3_jax.data.normalisation import NormalisationStats

NOTES_PREFIX = "beam_notes"
_NOTES = "notes"


def _bad_note(split: str, problem: str, file: str, **ids) -> str:
    return json.dumps(
        {"split": split, "bad": {**ids, "file": file, "problem": problem}}
    )


def _absent_note(split: str, absent: Sequence[str]) -> str:
    return json.dumps({"split": split, "absent": list(absent)})


class _ParseReleaseRow(beam.DoFn):
    """A release row -> (name, example); bad rows to the notes (skip_bad) or
    raised, as the pool build does."""

    def __init__(self, ctx: objects.Context, split: str, skip_bad: bool):
        self._ctx, self._split, self._skip_bad = ctx, split, skip_bad
        self._state = None

    def setup(self):
        self._state = objects._open_worker(self._ctx)

    def teardown(self):
        if self._state is not None:
            self._state.close()

    def process(self, indexed):
        position, row = indexed
        example, error = objects._work_one(row, self._state)
        if error is None:
            absent = [
                m
                for m in self._ctx.optional
                if len(example[objects.optional_fields(m)[0]]) == 0
            ]
            if absent:
                yield beam.pvalue.TaggedOutput(
                    _NOTES, _absent_note(self._split, absent)
                )
            yield row["name"], example
        elif self._skip_bad:
            note = _bad_note(
                self._split, error.problem, error.file,
                name=row.get("name"), id=row.get("id"), position=position,
            )  # fmt: skip
            yield beam.pvalue.TaggedOutput(_NOTES, note)
        else:
            raise release_io.ReleaseError(
                f"{error.problem} (split {self._split}; rerun with --skip_bad to "
                "skip such objects and list them)",
                file=error.file,
                obj=error.obj,
            )


def _read_split_rows(csv_path: str, text_cols: Sequence[str]):
    """(position, row) of each row of a split CSV."""
    rows = release_io.read_split_csv(csv_path, schema.ALL_COLS, tuple(text_cols))
    if not rows:
        raise release_io.ReleaseError("split CSV lists no objects", file=csv_path)
    return enumerate(rows)


def _write_notes(notes, data_dir: str, split: str):
    prefix = str(epath.Path(data_dir) / f"{NOTES_PREFIX}-{split}")
    return notes | f"WriteNotes_{split}" >> beam.io.WriteToText(
        prefix, file_name_suffix=".jsonl"
    )


@beam.ptransform_fn
def release_examples(
    pbegin, *, ctx: objects.Context, split: str, text_cols: Sequence[str],
    skip_bad: bool, data_dir: str,
):  # fmt: skip
    """(name, example) of one split of a release; the CSV is read on a worker
    and its rows are spread over the others."""
    parsed = (
        pbegin
        | "SplitCsv" >> beam.Create([ctx.csv_path])
        | "Rows" >> beam.FlatMap(_read_split_rows, text_cols=tuple(text_cols))
        | "Spread" >> beam.Reshuffle()
        | "Parse"
        >> beam.ParDo(_ParseReleaseRow(ctx, split, skip_bad)).with_outputs(
            _NOTES, main="examples"
        )
    )
    _write_notes(parsed[_NOTES], data_dir, split)
    return parsed["examples"]


# ------------------------------------------------------------------ catalogue
def _catalog_rows(table: str, split: str, seed: int):
    cat = catalog_tables.read_catalog(table)
    return catalog_splits.assign_splits(cat, seed)[split]


class _GatherStats(beam.CombineFn):
    """The train rows' values gathered and reduced in row order, so the
    statistics are bit-identical to the pool build's (a sum of partial sums
    would differ in the last bits); 38 numbers a row."""

    def __init__(self, source: str):
        self._source = source

    def create_accumulator(self):
        return []

    def add_input(self, acc, indexed):
        acc.append(indexed)
        return acc

    def merge_accumulators(self, accs):
        return [x for acc in accs for x in acc]

    def extract_output(self, acc):
        values = [v for _, v in sorted(acc, key=lambda x: x[0])]
        return catalog_splits.stats_of_values(values, self._source).to_json()


def _values_for_stats(row, derive_photometry: bool):
    values = catalog_rows.values_for_stats(row, derive_photometry=derive_photometry)
    return row.index, values


def _write_stats(stats_json: str, path: str):
    epath.Path(path).write_text(stats_json)


class CatalogStats:
    """The train split's statistics as a one-element PCollection, made once
    per pipeline and shared by the three splits' transforms."""

    def __init__(self, table: str, seed: int, derive_photometry: bool, path: str):
        self._table, self._seed = table, seed
        self._derive, self._path = derive_photometry, path
        self._pcoll = None

    def get(self, pipeline):
        if self._pcoll is None:
            self._pcoll = (
                pipeline
                | "StatsTable" >> beam.Create([self._table])
                | "StatsRows" >> beam.FlatMap(_catalog_rows, "train", self._seed)
                | "StatsSpread" >> beam.Reshuffle()
                | "StatsValues"
                >> beam.Map(_values_for_stats, derive_photometry=self._derive)
                | "Stats"
                >> beam.CombineGlobally(
                    _GatherStats(f"train split of {self._table}")
                ).without_defaults()
            )
            _ = self._pcoll | "WriteStats" >> beam.Map(_write_stats, self._path)
        return self._pcoll


class _ParseCatalogRow(beam.DoFn):
    def __init__(self, table, split, options, optional, skip_bad):
        self._table, self._split, self._options = table, split, options
        self._optional, self._skip_bad = tuple(optional), skip_bad

    def process(self, row, stats_json):
        stats = NormalisationStats.from_json(stats_json)
        try:
            example = catalog_rows.process_row(
                row, stats, catalog=self._table, **self._options
            )
        except catalog_rows.RowError as e:
            if not self._skip_bad:
                raise catalog_rows.RowError(
                    f"{e.problem} (split {self._split}; rerun with --skip_bad to "
                    "skip such rows and list them)",
                    catalog=self._table, row=row.index, id=row.id, file=e.file,
                ) from None  # fmt: skip
            note = _bad_note(
                self._split, e.problem, e.file, row=row.index, name=row.name, id=row.id
            )
            yield beam.pvalue.TaggedOutput(_NOTES, note)
            return
        stored = dict(example.features)
        if self._optional:
            stored = objects.store_optional(stored, self._optional)
            absent = [m for m in self._optional if not example.present[m]]
            if absent:
                yield beam.pvalue.TaggedOutput(
                    _NOTES, _absent_note(self._split, absent)
                )
        yield row.id, stored


@beam.ptransform_fn
def catalog_examples(
    pbegin, *, table: str, split: str, seed: int, stats: CatalogStats,
    require: Sequence[str], optional: Sequence[str], derive_photometry: bool,
    skip_bad: bool, data_dir: str,
):  # fmt: skip
    """(id, example) of one split of a user's catalogue, normalised with the
    train split's statistics (a side input)."""
    options = {"require": tuple(require), "derive_photometry": derive_photometry}
    parsed = (
        pbegin
        | "Table" >> beam.Create([table])
        | "Rows" >> beam.FlatMap(_catalog_rows, split, seed)
        | "Spread" >> beam.Reshuffle()
        | "Parse"
        >> beam.ParDo(
            _ParseCatalogRow(table, split, options, optional, skip_bad),
            beam.pvalue.AsSingleton(stats.get(pbegin.pipeline)),
        ).with_outputs(_NOTES, main="examples")
    )
    _write_notes(parsed[_NOTES], data_dir, split)
    return parsed["examples"]


# ---------------------------------------------------------------- after a run
def read_notes(data_dir: str) -> tuple[dict[str, list], dict[str, dict[str, int]]]:
    """({split: bad objects}, {split: {modality: objects without it}}) from the
    notes files a Beam build wrote into data_dir, which are then deleted."""
    bad: dict[str, list] = {}
    absent: dict[str, dict[str, int]] = {}
    for path in sorted(epath.Path(data_dir).glob(f"{NOTES_PREFIX}-*")):
        for line in path.read_text().splitlines():
            note = json.loads(line)
            split = note["split"]
            if "bad" in note:
                bad.setdefault(split, []).append(note["bad"])
            for m in note.get("absent", ()):
                counts = absent.setdefault(split, {})
                counts[m] = counts.get(m, 0) + 1
        path.unlink()
    for items in bad.values():  # in row order, as the pool build lists them
        items.sort(key=lambda b: b.get("row", b.get("position", -1)))
        for b in items:
            b.pop("position", None)
    return bad, absent
