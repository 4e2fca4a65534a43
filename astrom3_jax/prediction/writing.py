"""What predict writes into `out`, formatted once here: predictions.csv (one
row per star), neighbours.csv (with a reference) and the embeddings in the
export layout (analysis/store.py) with their manifest."""

from __future__ import annotations

import csv
import os

import numpy as np

from astrom3_jax.analysis import store
from astrom3_jax.data import schema
from astrom3_jax.data.lightcurve_cleaning import RECORD_FIELDS
from astrom3_jax.prediction import scoring

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
    out-of-distribution score, percentile and method; each
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


def write_tables(out: str, rows: list[dict], neighbours: list[dict] | None):
    """predictions.csv (the columns in first-seen order, blank where a row
    lacks one) and, unless `neighbours` is None, neighbours.csv."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(os.path.join(out, PREDICTIONS_FILE), "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)
    if neighbours is not None:
        with open(os.path.join(out, NEIGHBOURS_FILE), "w", newline="") as f:
            w = csv.DictWriter(f, NEIGHBOURS_COLUMNS)
            w.writeheader()
            w.writerows(neighbours)


def write_embeddings(
    out: str, ran, class_names, *, source, catalog, model_task, reference, k,
    **extra,
):  # fmt: skip
    """The stars' embeddings, presence flags and logits as the export split
    `catalog`, and manifest.json saying what was run (with `extra` fields,
    e.g. which shard)."""
    names = list(ran.present)
    index = {
        "id": ran.ids,
        "name": np.asarray(ran.star_names),
        "label": np.maximum(ran.labels, 0),
        "has_label": ran.labels >= 0,
        **{store.presence_column(m): ran.present[m] for m in names},
    }
    store.save_split(
        out, SPLIT, embeddings=ran.embeddings, index=index, logits=ran.logits
    )
    store.write_manifest(
        out,
        source=str(source),
        catalog=str(catalog),
        splits=[SPLIT],
        modalities=names,
        class_names=class_names,
        model_task=model_task,
        reference=str(reference) if reference else None,
        k=k,
        bad_rows=len(ran.bad),
        **extra,
    )
