"""What predict writes into `out`, formatted once here: predictions.csv (one
row per star), neighbours.csv (with a reference) and the embeddings in the
export layout (analysis/store.py) with their manifest. `Output` writes them
chunk by chunk as the stars are scored, so memory holds a chunk of stars,
not the catalogue."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np
import scipy.special

from astrom3_jax.analysis import store
from astrom3_jax.data import schema
from astrom3_jax.data.lightcurve_cleaning import RECORD_FIELDS
from astrom3_jax.prediction import scoring
from astrom3_jax.training import calibration

PREDICTIONS_FILE = "predictions.csv"
NEIGHBOURS_FILE = "neighbours.csv"
NEIGHBOURS_COLUMNS = ("id", "rank", "neighbour_id", "neighbour_label", "cosine")
SPLIT = "catalog"
PHOTO_COLUMNS = tuple(name for c in schema.PHOTO_COLS for name in (c, f"{c}_source"))


def prediction_rows(
    ran, class_names, *, probs=None, votes=None, near=None, ref_names=None,
    unfamiliar=None,
) -> list[dict]:  # fmt: skip
    """The lines of predictions.csv, column by column in the written order:
    the star; the modalities it has and those the model used; what was used
    of its light-curve file (band, points kept, rows dropped by reason) and
    its 4 light-curve catalogue numbers, each with its source (catalogue,
    derived, training_mean); a classifier's class, its probabilities
    (temperature scaled when the model has a calibration) and its
    out-of-distribution score, percentile and method, and the light curve's
    second-period power the score read (data/lightcurve_modes.py); each
    modality's vote; with a reference (`near`), the k-NN class, its
    agreement, the outlier score and percentile, and for a labelled star the
    mislabel score."""
    names = list(ran.present)
    rows = []
    for i, star_id in enumerate(ran.ids):
        label = ran.labels[i]
        row = {
            "id": str(star_id),
            "name": ran.star_names[i],
            "label": class_names[label] if label >= 0 else "",
            "modalities": "+".join(ran.has[i]),
            "modalities_used": "+".join(m for m in names if ran.present[m][i]),
        }
        record = ran.light_curves[i]
        row.update(record.as_dict() if record else dict.fromkeys(RECORD_FIELDS, ""))
        values = ran.photometry_values[i]
        row.update(values.as_columns() if values else dict.fromkeys(PHOTO_COLUMNS, ""))
        if probs is not None:
            row["class"] = class_names[int(np.argmax(probs[i]))]
            row.update(
                {f"p_{c}": f"{probs[i, j]:.6f}" for j, c in enumerate(class_names)}
            )
        if unfamiliar is not None:
            row["ood_score"] = f"{unfamiliar.score[i]:.6g}"
            pct = unfamiliar.percentile[i]
            row["ood_percentile"] = "" if np.isnan(pct) else f"{pct:.1f}"
            row["ood_method"] = unfamiliar.method
            # Blank where not measured (no light curve, or a calibration
            # that does not read it).
            second = ran.light_curve_numbers[i, calibration.SECOND_PERIOD_CHANNEL]
            row["second_period_power"] = (
                f"{scipy.special.expit(second):.4f}" if np.isfinite(second) else ""
            )
        for m, v in (votes or {}).items():
            row[f"class_{m}"] = class_names[v[i]] if v[i] >= 0 else ""
        if near is not None:
            vote = near.vote[i]
            row["knn_class"] = ref_names[vote] if vote >= 0 else ""
            row["knn_agreement"] = f"{near.agreement[i]:.3f}"
            row["outlier_score"] = f"{near.outlier[i]:.6f}"
            row["outlier_percentile"] = f"{near.percentile[i]:.1f}"
            if label >= 0:
                row["mislabel_score"] = f"{near.mislabel[i]:.3f}"
        rows.append(row)
    return rows


def neighbour_rows(
    ids, near: scoring.Neighbours, ref: store.Split, ref_names
) -> list[dict]:
    """The lines of neighbours.csv: each star's nearest reference objects,
    by rank."""
    out = []
    for star_id, idx, sims in zip(ids, near.index, near.cosine, strict=True):
        for r, (j, s) in enumerate(zip(idx, sims, strict=True)):
            if j >= 0:
                out.append(
                    {
                        "id": str(star_id),
                        "rank": r + 1,
                        "neighbour_id": str(ref.index["id"][j]),
                        "neighbour_label": ref_names[ref.labels[j]],
                        "cosine": f"{s:.6f}",
                    }
                )
    return out


class Output:
    """predict's files, written as each chunk of stars is scored: `add` per
    chunk, then `close`; `abort` on an error removes the partial files, so
    that a failed run leaves no predictions (bad_rows.csv is written apart).

    predictions.csv goes through `_Table`, neighbours.csv (with a
    reference) through a part file renamed at the end, the embeddings
    through store.SplitWriter (the split `catalog`), manifest.json last.
    The files are those writing every star at once gives, whatever the
    chunks (tests/test_predict.py, tests/test_prediction_writing.py).
    """

    def __init__(self, out: str, *, neighbours: bool):
        self.out = out
        self.table = _Table(os.path.join(out, PREDICTIONS_FILE))
        self.neighbours = None
        if neighbours:
            self.neighbours = _Lines(
                os.path.join(out, NEIGHBOURS_FILE), NEIGHBOURS_COLUMNS
            )
        self.split = store.SplitWriter(out, SPLIT)

    def add(self, ran, rows: list[dict], neighbours: list[dict] | None) -> None:
        """One chunk: its Ran (running.py) and its lines of both tables."""
        self.table.add(rows)
        if self.neighbours is not None:
            self.neighbours.add(neighbours)
        names = list(ran.present)
        index = {
            "id": ran.ids,
            "name": np.asarray(ran.star_names),
            "label": np.maximum(ran.labels, 0),
            "has_label": ran.labels >= 0,
            **{store.presence_column(m): ran.present[m] for m in names},
        }
        self.split.add(embeddings=ran.embeddings, index=index, logits=ran.logits)

    def close(self, **manifest) -> None:
        """Finishes the files and writes manifest.json (`write_manifest`)."""
        self.table.close()
        if self.neighbours is not None:
            self.neighbours.close()
        self.split.close()
        write_manifest(self.out, **manifest)

    def abort(self) -> None:
        self.table.discard()
        if self.neighbours is not None:
            self.neighbours.discard()
        self.split.abort()

    def result(self, names: Sequence[str]) -> dict:
        """Result's fields read back from the files: the index columns in
        memory, the arrays memory-mapped (read-only: the stored unit rows,
        float32, NaN where absent), the rows read when asked for."""
        folder = os.path.join(self.out, SPLIT)
        with np.load(os.path.join(folder, store.INDEX)) as index:
            ids = index["id"]
            present = {m: index[store.presence_column(m)] for m in names}
        logits = os.path.join(folder, store.LOGITS)
        return dict(
            ids=ids,
            present=present,
            embeddings={
                m: np.load(os.path.join(folder, f"{m}.npy"), mmap_mode="r")
                for m in names
            },
            logits=np.load(logits, mmap_mode="r") if os.path.exists(logits) else None,
            rows=CsvRows(self.table.path, self.table.rows),
        )


class Kept:
    """`Output` for the processes other than the first, which write nothing:
    the chunks are kept in memory and joined for their Result, as before."""

    def __init__(self):
        self.chunks, self.rows = [], []

    def add(self, ran, rows: list[dict], neighbours) -> None:
        self.chunks.append(ran)
        self.rows += rows

    def close(self, **manifest) -> None:
        pass

    def abort(self) -> None:
        self.chunks, self.rows = [], []

    def result(self, names: Sequence[str]) -> dict:
        def join(get):
            return np.concatenate([get(ran) for ran in self.chunks])

        logits = None
        if self.chunks[0].logits is not None:
            logits = join(lambda ran: ran.logits)
        return dict(
            ids=join(lambda ran: ran.ids),
            present={m: join(lambda ran, m=m: ran.present[m]) for m in names},
            embeddings={m: join(lambda ran, m=m: ran.embeddings[m]) for m in names},
            logits=logits,
            rows=self.rows,
        )


class _Table:
    """predictions.csv, whose columns are those first seen over all rows
    (blank where a row lacks one), so known only once every row is made.
    Each chunk's rows go to a part file under the columns seen so far, which
    are always the head of the final ones (later chunks only add columns);
    `close` writes the header and copies the rows, each padded with blanks
    for the columns first seen after it: the file writing all rows at once
    with csv.DictWriter gives."""

    def __init__(self, path: str):
        self.path, self.partial = path, path + ".partial"
        self.file = open(self.partial, "w", newline="")
        self.columns: list[str] = []
        self.seen: set[str] = set()
        self.rows = 0

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            for key in row:
                if key not in self.seen:
                    self.seen.add(key)
                    self.columns.append(key)
        csv.DictWriter(self.file, self.columns, restval="").writerows(rows)
        self.rows += len(rows)

    def close(self) -> None:
        self.file.close()
        width = len(self.columns)
        with (
            open(self.partial, newline="") as part,
            open(self.path, "w", newline="") as f,
        ):
            w = csv.writer(f)
            w.writerow(self.columns)
            for fields in csv.reader(part):
                w.writerow(fields + [""] * (width - len(fields)))
        os.remove(self.partial)

    def discard(self) -> None:
        self.file.close()
        if os.path.exists(self.partial):
            os.remove(self.partial)


class _Lines:
    """A CSV of fixed columns written row by row to a part file, renamed into
    place at `close`."""

    def __init__(self, path: str, columns: Sequence[str]):
        self.path, self.partial = path, path + ".partial"
        self.file = open(self.partial, "w", newline="")
        self.writer = csv.DictWriter(self.file, columns)
        self.writer.writeheader()

    def add(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)

    def close(self) -> None:
        self.file.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.file.close()
        if os.path.exists(self.partial):
            os.remove(self.partial)


class CsvRows(Sequence):
    """The lines of a CSV as dicts of text (every column; '' where blank),
    read from the file when asked for: iterating streams it, indexing reads
    it once and keeps it. predict's `Result.rows`, so that predict never
    holds every star's line."""

    def __init__(self, path: str, n: int):
        self.path, self.n = path, n
        self._rows: list[dict] | None = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self._rows is not None:
            yield from self._rows
            return
        with open(self.path, newline="") as f:
            yield from csv.DictReader(f)

    def __getitem__(self, i):
        if self._rows is None:
            self._rows = list(self)
        return self._rows[i]


def write_manifest(
    out: str, *, names, class_names, source, catalog, model_task, reference, k,
    bad_rows: int, **extra,
):  # fmt: skip
    """manifest.json: what was run (with `extra` fields, e.g. which shard)."""
    store.write_manifest(
        out,
        source=str(source),
        catalog=str(catalog),
        splits=[SPLIT],
        modalities=list(names),
        class_names=class_names,
        model_task=model_task,
        reference=str(reference) if reference else None,
        k=k,
        bad_rows=bad_rows,
        **extra,
    )
