"""Your own stars through a model: `predict(workdir, catalog, out)`.

A catalogue (astrom3_jax/data/catalog.py: one row per star, pointing at its
raw light curve, spectrum and catalogue values, any of them missing) is
preprocessed with the builder's own functions and the normalisation
statistics recorded with the model (no training data needed), then run
through the one evaluation path (training/evaluation.py). Written to `out`:

  predictions.csv   one row per star: id, name, label (if the catalogue
                    has one), the modalities used; for a classifier the
                    predicted class and every class's probability, and for
                    a fused classifier each modality's own vote; with a
                    reference, the k-NN class vote, its agreement, the
                    outlier score and its percentile, and where a label is
                    given a mislabel score
  neighbours.csv    with a reference: each star's k nearest reference
                    objects (rank, id, label, cosine similarity)
  catalog/          the embeddings in the export layout (analysis/store.py;
                    absent modalities are NaN rows with presence flags)
  bad_rows.csv      with skip_bad: the rows left out and why
  manifest.json     what was run

How it runs: the cheap checks come first (statistics, reference,
catalogue table), then a background thread preprocesses the rows in row
order (in worker processes for large tables on more than 2 CPUs,
`default_workers`) while this thread loads and compiles the model and
runs it on each chunk of rows as soon as it is ready, so parsing overlaps
the model instead of preceding it. A bad row
stops the run as soon as it is seen (strict), and with skip_bad the model
stops as soon as more than max_bad_fraction of the rows are bad (the rest
is still read, so that bad_rows.csv lists them all).

Nearest known stars: a star is compared with the reference objects on the
modalities it has: its embedding is the mean of its present modalities'
unit vectors, and each reference object's is the mean of the same
modalities, so a star without a spectrum is matched on light curve and
catalogue values alone.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import workers as workers_lib

PREDICTIONS_FILE = "predictions.csv"
NEIGHBOURS_FILE = "neighbours.csv"
SPLIT = "catalog"
DEFAULT_K = 10
CHUNK_BATCHES = 4  # batches of preprocessed rows per model run (the first: 1)


class PredictError(errors.UserError, ValueError):
    """A predict call that cannot run as asked (names what to change)."""


@dataclasses.dataclass
class Result:
    """What `predict` computed (also written to `out`)."""

    ids: np.ndarray
    present: dict[str, np.ndarray]  # modality -> (N,) bool
    embeddings: dict[str, np.ndarray]  # modality -> (N, D), NaN where absent
    logits: np.ndarray | None
    class_names: list[str]
    rows: list[dict]  # the lines of predictions.csv
    bad_rows: tuple
    # wall seconds: 'load' (model loaded and ready), 'model' (running it,
    # compilation included), 'waiting' (for preprocessed rows), 'total'
    timings: dict = dataclasses.field(default_factory=dict)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _mean_of(units: dict, names: Sequence[str], rows: np.ndarray) -> np.ndarray:
    return _unit(np.mean([units[m][rows] for m in names], axis=0))


class CatalogSource(list):
    """Catalogue examples in the stored form the input pipeline reads, with
    the fields an object may lack declared (`optional_fields`)."""

    optional_fields: frozenset = frozenset()


def _stored_examples(examples, model_modalities) -> CatalogSource:
    from astrom3_jax.data.astrom3_tfds import objects

    out = CatalogSource()
    for ex in examples:
        stored = objects.store_optional(dict(ex.features), optional=model_modalities)
        stored["label"] = max(int(ex.label), 0)  # the pipeline wants a class id
        out.append(stored)
    out.optional_fields = frozenset(
        f for m in model_modalities for f in objects.OPTIONAL_FIELDS[m]
    )
    return out


def _modality_votes(model, embeddings, present, names) -> dict[str, np.ndarray]:
    """A fused classifier's prediction from each modality alone (its head
    on that modality's embedding, the others flagged absent)."""
    import jax.numpy as jnp

    if not hasattr(model, "fuse"):
        return {}
    n = len(next(iter(present.values())))
    out = {}
    for m in names:
        emb = {k: jnp.asarray(np.nan_to_num(embeddings[k])) for k in names}
        flags = {k: jnp.full((n,), 1.0 if k == m else 0.0) for k in names}
        logits = np.asarray(model.fc(model.fuse(emb, flags)), np.float32)
        out[m] = np.where(present[m], np.argmax(logits, axis=1), -1)
    return out


def _neighbours(ref, embeddings, present, names, k: int):
    """(neighbour indices (N, k) into the reference split `ref` (-1: none),
    cosines, outlier scores, their percentiles among the reference's own
    scores).

    Each star is compared on the modalities it has (module docstring); its
    outlier score is 1 - the mean cosine to its k nearest reference
    objects, and its percentile places that among the same score of every
    reference object against the others (100: farther than all of them).
    """
    from astrom3_jax.analysis.similarity import top_k_neighbours

    ref_units = {m: np.nan_to_num(ref.embeddings[m].astype(np.float64)) for m in names}
    units = {m: np.nan_to_num(embeddings[m].astype(np.float64)) for m in names}
    n = len(next(iter(present.values())))
    pattern_of = [tuple(m for m in names if present[m][i]) for i in range(n)]
    idx = np.full((n, k), -1, np.int64)
    sims = np.full((n, k), np.nan)
    outlier = np.full(n, np.nan)
    percentile = np.full(n, np.nan)
    for pattern in sorted(set(pattern_of)):
        rows = np.flatnonzero([p == pattern for p in pattern_of])
        cand = np.flatnonzero(np.all([ref.present(m) for m in pattern], axis=0))
        if not pattern or len(cand) < 2:
            continue
        q = _mean_of(units, pattern, rows)
        c = _mean_of(ref_units, pattern, cand)
        kk = min(k, len(cand) - 1)
        got_i, got_s = top_k_neighbours(q, c, kk)
        idx[rows, :kk], sims[rows, :kk] = cand[got_i], got_s
        outlier[rows] = 1.0 - got_s.mean(axis=1)
        _, own_s = top_k_neighbours(c, c, kk, exclude=np.arange(len(c)))
        own = np.sort(1.0 - own_s.mean(axis=1))
        at = np.searchsorted(own, outlier[rows], "right")
        percentile[rows] = 100.0 * at / len(own)
    return idx, sims, outlier, percentile


def _reference_split(reference: str, names: Sequence[str]):
    from astrom3_jax.analysis import store

    splits = store.list_splits(reference) if os.path.isdir(reference) else []
    if not splits:
        raise PredictError(
            f"--reference {reference}: not an export (python -m "
            "astrom3_jax.export_embeddings ... --out DIR, then pass DIR or "
            "DIR/<split>)"
        )
    split = "train" if "train" in splits else splits[0]
    ref = store.load_split(reference, split)
    missing = [m for m in names if m not in ref.embeddings]
    if missing:
        raise PredictError(
            f"--reference {reference}: its export has no {missing} embeddings; "
            "export the reference with the same model"
        )
    return ref


def default_workers(n_rows: int) -> int:
    """Preprocessing worker processes for predict: workers.default_workers
    (none on 2 CPUs or fewer, where the model keeps every core busy)."""
    return workers_lib.default_workers(n_rows)


_DONE = object()


class _Feed(threading.Thread):
    """Preprocesses a catalogue's rows in the background, in row order, into
    a bounded queue of (row, example | None, RowError | None); an exception
    of the preprocessing itself is queued too and raised by `items`.
    `first_error` is the first bad row seen so far (the consumer may stop
    early on it), `bad` how many there were."""

    def __init__(self, cat, stats, *, require, num_workers, progress, maxsize):
        super().__init__(name="predict-preprocessing", daemon=True)
        self.cat, self.stats, self.require = cat, stats, tuple(require)
        self.num_workers, self.progress = num_workers, progress
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.stopping = threading.Event()
        self.first_error = None
        self.bad = 0

    def run(self):
        from tqdm import tqdm

        from astrom3_jax.data import catalog as catalog_lib

        rows = catalog_lib.iter_processed(
            self.cat.rows, self.stats, catalog=self.cat.path, require=self.require,
            num_workers=self.num_workers,
        )  # fmt: skip
        bar = tqdm(
            total=len(self.cat), desc=f"read {os.path.basename(self.cat.path)}",
            unit="obj", disable=not self.progress, position=0,
        )  # fmt: skip
        try:
            with bar, contextlib.closing(rows):
                for item in rows:
                    if self.stopping.is_set():
                        return
                    bar.update()
                    if item[2] is not None:
                        self.bad += 1
                        self.first_error = self.first_error or item[2]
                    self._put(item)
        except BaseException as e:  # noqa: BLE001 (raised again by items())
            self._put(e)
        self._put(_DONE)

    def _put(self, item):
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def items(self):
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stopping.set()
        self.join()


def _class_votes(labels: np.ndarray, idx: np.ndarray, n_classes: int):
    """(k-NN class, fraction of the k neighbours in it) per star; -1 / NaN
    for a star without neighbours."""
    vote = np.full(len(idx), -1, np.int64)
    frac = np.full(len(idx), np.nan)
    for i, row in enumerate(idx):
        row = row[row >= 0]
        if len(row):
            counts = np.bincount(labels[row], minlength=n_classes)
            vote[i] = int(np.argmax(counts))
            frac[i] = counts[vote[i]] / len(row)
    return vote, frac


def predict(
    workdir: str,
    catalog: str,
    out: str,
    *,
    reference: str | None = None,
    k: int = DEFAULT_K,
    step=None,
    skip_bad: bool = False,
    max_bad_fraction: float = 0.05,
    batch_size: int = 256,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Result:
    """Predict every star of `catalog` with the model of `workdir`; see the
    module docstring for what is written to `out`."""
    import jax
    from tqdm import tqdm

    from astrom3_jax import api
    from astrom3_jax.analysis import store
    from astrom3_jax.data import catalog as catalog_lib
    from astrom3_jax.data import normalisation, schema
    from astrom3_jax.training import evaluation
    from astrom3_jax.training import workdir as workdir_lib

    started = time.perf_counter()
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise PredictError(
            f"{out} exists and is not empty; choose another --out or pass --overwrite"
        )
    if k < 1:
        raise PredictError(f"k must be at least 1, got {k}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise PredictError(
            f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}"
        )
    # The cheap checks first: a refusal comes before any file is parsed.
    stats = normalisation.read_stats(workdir)
    config = api.with_defaults(workdir_lib.load_any_config(workdir))
    names = list(config.model.modalities)
    ref = _reference_split(reference, names) if reference is not None else None
    single = config.model.task == "classification" and len(names) == 1
    cat = catalog_lib.read_catalog(catalog)
    os.makedirs(out, exist_ok=True)
    bad_rows_path = os.path.join(out, catalog_lib.BAD_ROWS_FILE)
    batch = max(jax.device_count(), batch_size - batch_size % jax.device_count())
    chunk = batch * CHUNK_BATCHES
    if num_workers is None:
        num_workers = default_workers(len(cat))
    feed = _Feed(
        cat, stats, require=tuple(names) if single else (),
        num_workers=num_workers, maxsize=2 * chunk,
        progress=progress and jax.process_index() == 0,
    )  # fmt: skip
    limit = catalog_lib.allowed_bad(len(cat), max_bad_fraction)
    stars, pending, parts, bad = [], [], [], []
    timings = {"model": 0.0, "waiting": 0.0}
    feed.start()
    try:
        model, config = api.load_model(workdir, step=step)
        predictor = evaluation.Predictor(model, seed=config.seed)
        timings["load"] = time.perf_counter() - started
        bar = tqdm(
            total=len(cat), desc="predict", unit="obj", position=1,
            disable=not progress or jax.process_index() != 0,
        )  # fmt: skip

        def run_model():
            # feed.bad: the bad rows read so far, some maybe not yet seen here
            if not pending or max(len(bad), feed.bad) > limit:
                pending.clear()
                return
            t = time.perf_counter()
            got = predictor.run(
                _stored_examples(pending, names),
                batch_size=batch,
                modalities=names,
                seq_len=config.seq_len,
            )
            timings["model"] += time.perf_counter() - t
            parts.append(got.outputs)
            bar.update(len(pending))
            pending.clear()

        with bar:
            items = feed.items()
            while True:
                t = time.perf_counter()
                item = next(items, None)
                timings["waiting"] += time.perf_counter() - t
                if item is None:
                    break
                row, example, error = item
                if error is None and not any(example.present.get(m) for m in names):
                    error = catalog_lib.RowError(
                        f"none of this model's modalities {names}",
                        catalog=cat.path, row=row.index, id=row.id, file=cat.path,
                    )  # fmt: skip
                if error is not None and not skip_bad:
                    raise _strict(error)
                if error is not None:
                    bad.append(
                        catalog_lib.BadRow(
                            error.row, error.id, error.file, error.problem
                        )
                    )
                    continue
                name = example.features.get("name", example.id)
                stars.append((example.id, name, example.label))
                pending.append(example)
                # The first run starts at one batch: it compiles the model's
                # step while the next rows are read.
                if len(pending) >= (chunk if parts else batch):
                    if feed.first_error is not None and not skip_bad:
                        raise _strict(feed.first_error)  # before more model time
                    run_model()
            run_model()
    finally:
        feed.close()
    if skip_bad:
        catalog_lib.write_bad_rows(bad_rows_path, bad)
    n_rows = len(cat)
    listed = f" They are listed in {bad_rows_path}." if skip_bad else ""
    if len(bad) == n_rows:
        raise catalog_lib.CatalogError(
            f"catalog {cat.path}: all {n_rows} rows are bad, nothing to use.{listed} "
            f"First: row {bad[0].row} (id {bad[0].id!r}): {bad[0].reason}"
        )
    if len(bad) > limit:
        raise catalog_lib.CatalogError(
            f"catalog {cat.path}: {len(bad)} of {n_rows} rows are bad "
            f"({100 * len(bad) / n_rows:.1f}%), more than max_bad_fraction="
            f"{max_bad_fraction:g} allows ({limit}).{listed} Fix them, or allow "
            "more with max_bad_fraction= / --max_bad_fraction."
        )
    outputs = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    n = len(stars)
    present = {
        m: np.asarray(outputs.pop(store.presence_column(m), np.ones(n)), bool)
        for m in names
    }
    logits = outputs.pop("logits", None)
    embeddings = {m: np.where(present[m][:, None], outputs[m], np.nan) for m in names}
    class_names = list(schema.CLASSES)[: config.model.num_classes]
    ids = np.asarray([star[0] for star in stars])
    labels = np.asarray([star[2] for star in stars], np.int64)  # -1: none
    rows = []
    for i, (star_id, name, label) in enumerate(stars):
        row = {
            "id": star_id,
            "name": name,
            "label": class_names[label] if label >= 0 else "",
            "modalities": "+".join(m for m in names if present[m][i]),
        }
        if isinstance(row["name"], bytes):
            row["name"] = row["name"].decode()
        rows.append(row)
    if logits is not None:
        probs = _softmax(np.asarray(logits, np.float64))
        for i, row in enumerate(rows):
            row["class"] = class_names[int(np.argmax(probs[i]))]
            row.update(
                {f"p_{c}": f"{probs[i, j]:.6f}" for j, c in enumerate(class_names)}
            )
        if len(names) > 1:
            votes = _modality_votes(model, embeddings, present, names)
            for m, v in votes.items():
                for i, row in enumerate(rows):
                    row[f"class_{m}"] = class_names[v[i]] if v[i] >= 0 else ""
    neighbours = []
    if reference is not None:
        idx, sims, outlier, pct = _neighbours(ref, embeddings, present, names, k)
        ref_ids, ref_labels = ref.index["id"], ref.labels
        vote, frac = _class_votes(ref_labels, idx, len(class_names))
        ref_names = ref.class_names or class_names
        for i, row in enumerate(rows):
            row["knn_class"] = ref_names[vote[i]] if vote[i] >= 0 else ""
            row["knn_agreement"] = f"{frac[i]:.3f}"
            row["outlier_score"] = f"{outlier[i]:.6f}"
            row["outlier_percentile"] = f"{pct[i]:.1f}"
            if labels[i] >= 0:
                # The share of the k nearest known stars that disagree with
                # the catalogue's label: 1.0 when none of them shares it.
                nn = idx[i][idx[i] >= 0]
                agree = np.mean(ref_labels[nn] == labels[i]) if len(nn) else np.nan
                row["mislabel_score"] = f"{1.0 - agree:.3f}"
            for r, (j, s) in enumerate(zip(idx[i], sims[i], strict=True)):
                if j >= 0:
                    neighbours.append(
                        {
                            "id": row["id"],
                            "rank": r + 1,
                            "neighbour_id": str(ref_ids[j]),
                            "neighbour_label": ref_names[ref_labels[j]],
                            "cosine": f"{s:.6f}",
                        }
                    )
    if jax.process_index() == 0:
        _write(out, rows, neighbours, reference is not None)
        index = {
            "id": ids,
            "name": np.asarray([r["name"] for r in rows]),
            "label": np.maximum(labels, 0),
            "has_label": labels >= 0,
            **{store.presence_column(m): present[m] for m in names},
        }
        store.save_split(out, SPLIT, embeddings=embeddings, index=index, logits=logits)
        store.write_manifest(
            out,
            source=str(workdir),
            catalog=str(catalog),
            splits=[SPLIT],
            modalities=names,
            class_names=class_names,
            model_task=config.model.task,
            reference=str(reference) if reference else None,
            k=k,
            bad_rows=len(bad),
        )
    timings["total"] = time.perf_counter() - started
    return Result(
        ids, present, embeddings, logits, class_names, rows, tuple(bad), timings
    )


def _strict(error):
    """The error of a bad row in a strict run (saying how to skip such rows)."""
    from astrom3_jax.data import catalog as catalog_lib

    return catalog_lib.RowError(
        f"{error.problem} (pass skip_bad=True / --skip_bad to leave such rows "
        f"out and list them in {catalog_lib.BAD_ROWS_FILE})",
        catalog=error.catalog, row=error.row, id=error.id, file=error.file,
    )  # fmt: skip


def _write(out: str, rows: list[dict], neighbours: list[dict], with_ref: bool):
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(os.path.join(out, PREDICTIONS_FILE), "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)
    if with_ref:
        cols = ["id", "rank", "neighbour_id", "neighbour_label", "cosine"]
        with open(os.path.join(out, NEIGHBOURS_FILE), "w", newline="") as f:
            w = csv.DictWriter(f, cols)
            w.writeheader()
            w.writerows(neighbours)
