"""Writes a complete raw release in the layout of the Hub's AstroM3Dataset.

<root>/photometry.zip                      vardb_files/<name>.dat
<root>/spectra/<CLASS>/<spec_filename>     LAMOST FITS (1-HDU or 2-HDU, some .gz)
<root>/splits/<sub>/<seed>/{train,val,test,unseen}.csv + info.json
"""

from __future__ import annotations

import pathlib

import numpy as np

from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.synthetic import catalogue, classes, lightcurves, spectra
from astrom3_jax.data.synthetic.release_files import (
    ALL_COLS,
    CATALOGUE_DIGITS,
    META_COLS,
    significant,
    stream_rng,
    write_splits,
    write_zip,
)

# Determinism: every random stream is derived from (seed, purpose, index)
# (`stream_rng`), work is chunked with this fixed chunk size (so the worker
# count never changes the output), zip members carry a fixed timestamp and
# gzip has mtime 0. Worker processes are spawned, not forked
# (workers.ordered_map): the caller may already run JAX threads, and forking
# a threaded process can deadlock the child.
CHUNK = 128

# rfr_score logit offset per catalogue class (clean EW/RR/Mira high, ROT/DSCT low).
_RFR_BASE = {"EW": 1.72, "RRAB": 1.84, "RRC": 1.36, "EA": 1.36, "EB": 0.88, "M": 1.84,
             "SR": 1.12, "HADS": 1.12, "DSCT": 0.52, "ROT": 0.58}  # fmt: skip


# Presets with incomplete objects: (preset of their complete objects, number
# of incomplete objects per complete known one). The complete objects, their
# splits and info.json are those of the base preset, file for file; the
# incomplete ones join the train split of every `full` split folder only.
INCOMPLETE_PRESETS = {"sky": ("small", 2), "bigsky": ("full", 2)}
# What an incomplete object has besides its light curve, as fractions of the
# incomplete objects (docs/synthetic/README.md says why): catalogue values
# but no spectrum; a spectrum but no catalogue values; neither.
INCOMPLETE_MIX = {"metadata": 0.925, "spectra": 0.025, "neither": 0.05}
# Random streams of the incomplete objects: seed (seed, EXTRA_STREAM).
EXTRA_STREAM = 7_000_001
PRESETS = ("small", "full", *INCOMPLETE_PRESETS)


# ----------------------------------------------------------------------------- objects
def draw_objects(
    preset, seed, n_objects=None, mislabel_fraction=0.02, n_unseen=None, counts=None
):
    """Catalogue labels (exact class counts), true classes, mislabels, unseen.

    counts: {class: n} instead of the preset's (classes.class_counts).
    """
    rng = stream_rng(seed, 1)
    if counts is None:
        counts = classes.class_counts(preset, n_objects)
    target = np.concatenate(
        [np.full(counts[c], c, dtype=object) for c in classes.CLASSES]
    )
    true = target.copy()
    n_mis = int(round(mislabel_fraction * len(target)))
    mis = rng.choice(len(target), n_mis, replace=False)
    for i in mis:
        # The label stays (exact counts); the star is of a confusable class.
        options = [t for t, labels in classes.CONFUSIONS.items() if target[i] in labels]
        true[i] = options[rng.integers(len(options))] if options else true[i]
    if n_unseen is None:
        n_unseen = max(6, len(target) // 100)
    per = np.array_split(np.arange(n_unseen), len(classes.UNSEEN_CLASSES))
    unseen_true = np.concatenate(
        [
            np.full(len(p), c, dtype=object)
            for p, c in zip(per, classes.UNSEEN_CLASSES, strict=True)
        ]
    )
    unseen_target = np.array(
        [classes.UNSEEN_LABEL[c] for c in unseen_true], dtype=object
    )
    order = rng.permutation(len(target))
    return {
        "target": np.concatenate([target[order], unseen_target]),
        "true": np.concatenate([true[order], unseen_true]),
        "unseen": np.concatenate(
            [np.zeros(len(target), bool), np.ones(len(unseen_true), bool)]
        ),
    }


def _names(ra, dec, taken=()):
    """ASAS-SN style names without spaces, ASASSN-VJhhmmss.ss+ddmmss.s (unique)."""
    out, seen = [], set(taken)
    for r, d in zip(ra, dec, strict=True):
        while True:
            h = r / 15.0
            hh, mm = int(h), int((h % 1) * 60)
            ss = ((h * 60) % 1) * 60
            sign = "+" if d >= 0 else "-"
            ad = abs(d)
            dd, dm = int(ad), int((ad % 1) * 60)
            ds = ((ad * 60) % 1) * 60
            name = f"ASASSN-VJ{hh:02d}{mm:02d}{min(ss, 59.99):05.2f}"
            name += f"{sign}{dd:02d}{dm:02d}{min(ds, 59.9):04.1f}"
            if name not in seen:
                break
            r = (r + 0.0005) % 360
        seen.add(name)
        out.append(name)
    return out


def _spec_names(rng, ra, dec, gz, taken=()):
    out, seen = [], set(taken)
    for r, d, z in zip(ra, dec, gz, strict=True):
        h = r / 15.0
        plan = f"HD{int(h):02d}{int((h % 1) * 60):02d}{int(((h * 60) % 1) * 60):02d}"
        plan += f"{'N' if d >= 0 else 'S'}{int(abs(d)):02d}{int((abs(d) % 1) * 60):02d}"
        plan += (
            f"{int(((abs(d) * 60) % 1) * 60):02d}{'V' if rng.random() < 0.7 else 'B'}01"
        )
        while True:
            mjd = int(rng.integers(55900, 59300))
            sp, fib = int(rng.integers(1, 17)), int(rng.integers(1, 251))
            name = f"spec-{mjd}-{plan}_sp{sp:02d}-{fib:03d}.fits" + (".gz" if z else "")
            if name not in seen:
                break
        seen.add(name)
        out.append(name)
    return out


def build_catalogue(
    preset="small",
    seed=0,
    n_objects=None,
    mislabel_fraction=0.02,
    n_unseen=None,
    taken=None,
    counts=None,
):
    """Every star's physics and catalogue values except light-curve-derived columns.

    taken: {"name", "id", "spec_filename": values} of another catalogue of the
    same release, which this one's stars avoid. counts: as in draw_objects.
    """
    taken = taken or {}
    obj = draw_objects(preset, seed, n_objects, mislabel_fraction, n_unseen, counts)
    true = obj["true"]
    rng = stream_rng(seed, 2)
    phys = classes.sample_physics(true, rng)
    n = len(true)
    phys["epoch"] = HJD0 + rng.uniform(0, 1, n) * 10 ** phys["log_p"]
    pos = catalogue.place_stars(true, phys, stream_rng(seed, 3))
    rng = stream_rng(seed, 4)
    phot, rp = catalogue.photometry_columns(true, phys, pos, rng)
    astro, rv = catalogue.astrometry_columns(
        true, phys, pos, phot["phot_g_mean_mag"], rng
    )
    period = catalogue.catalogue_period(true, phys, rng)
    cat = {**phot, **astro, "l": pos["l"], "b": pos["b"], "period": period}
    names = _names(pos["ra"], pos["dec"], taken.get("name", ()))
    id_rng = stream_rng(seed, 5)
    ids, taken_ids = set(), {int(i.split()[-1]) for i in taken.get("id", ())}
    while len(ids) < n:
        ids.update(
            int(x)
            for x in id_rng.integers(10**17, 6_917_528_997_577_384_320, n)
            if int(x) not in taken_ids
        )
    ids = sorted(ids)[:n]
    ids = [ids[i] for i in id_rng.permutation(n)]
    gz = stream_rng(seed, 6).random(n) < 0.7
    spec = _spec_names(
        stream_rng(seed, 7), pos["ra"], pos["dec"], gz, taken.get("spec_filename", ())
    )
    layout = np.where(stream_rng(seed, 8).random(n) < 0.5, 1, 2)
    # ASAS-SN blending (16" aperture): probability rises toward the plane.
    brng = stream_rng(seed, 11)
    p_blend = 0.1 + 0.3 * np.exp(-np.abs(pos["b"]) / 10.0)
    blend = np.where(brng.random(n) < p_blend, brng.lognormal(np.log(0.4), 0.8, n), 0.0)
    return {
        **obj, "phys": phys, "pos": pos, "cat": cat, "rv": rv, "rp": rp,
        "name": names, "id": [f"EDR3 {i}" for i in ids], "spec_filename": spec,
        "layout": layout, "blend": blend,
    }  # fmt: skip


HJD0 = lightcurves.HJD_START


# ----------------------------------------------------------------------------- workers
def _star_dict(cat, i):
    phys = cat["phys"]
    keys = (
        "log_p",
        "amp_v",
        "shape_a",
        "shape_b",
        "shape_c",
        "shape_d",
        "lsp_log_p",
        "epoch",
    )
    star = {k: float(phys[k][i]) for k in keys}
    star["v_mean"] = float(cat["pos"]["v_mean"][i])
    star["blend"] = float(cat["blend"][i])
    star["ra"] = float(cat["pos"]["ra"][i])
    star["dec"] = float(cat["pos"]["dec"][i])
    # A_g / A_V ~ 1.2: reddening adds 0.2 A_V to g - V.
    star["g_minus_v"] = float(
        classes.g_minus_v_of(phys["teff"][i]) + 0.2 * cat["pos"]["a_v"][i]
    )
    return star


def _chunk_work(args, _state=None):
    """Light curves (returned) and spectra (written) for one fixed chunk of stars."""
    root, seed, start, stop, cat = args
    lc_files, stats = [], []
    for j, i in enumerate(range(start, stop)):
        rng = stream_rng(seed, 100, i)
        star = _star_dict(cat, j)
        curve, rms = lightcurves.simulate(cat["true"][j], star, rng)
        t, mag, mag_err, flux, flux_err = curve
        lc_files.append(
            (
                cat["name"][j],
                lightcurves.format_dat(cat["name"][j], t, mag, mag_err, flux, flux_err),
            )
        )
        s = lightcurves.summarise(t, mag, flux, cat["period"][j])
        s["snr"] = float(star["amp_v"] / np.median(mag_err[mag < 50]))
        s["rms"] = rms
        stats.append(s)
    _write_spectra(root, seed, start, cat)
    return lc_files, stats


def _write_spectra(root, seed, start, cat):
    rng = stream_rng(seed, 200, start)
    phys = cat["phys"]
    m = len(cat["true"])
    phase = rng.uniform(0, 1, m)
    teff = phys["teff"].copy()
    pulsing = np.isin(cat["true"], ["RRAB", "RRC", "HADS", "CEP", "RRD", "M"])
    swing = np.select(
        [cat["true"] == "RRAB", cat["true"] == "M"], [800.0, 300.0], 300.0
    )
    teff = np.where(pulsing, teff + swing * np.cos(2 * np.pi * phase), teff)
    batch = {
        "teff_spec": teff, "logg": phys["logg"], "feh": phys["feh"],
        "true_class": cat["true"],
        "rv": cat["rv"], "a_v": cat["pos"]["a_v"], "vsini": phys["vsini"],
        "subtype": phys["subtype"], "phase": phase, "v_mean": cat["pos"]["v_mean"],
        "r_mag": cat["rp"],
    }  # fmt: skip
    # Stars without a spectrum (blank spec_filename; incomplete objects only)
    # get none: synthesised for the others only.
    keep = [j for j in range(m) if cat["spec_filename"][j]]
    if not keep:
        return
    if len(keep) < m:
        batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
        cat = {
            **cat,
            "name": [cat["name"][j] for j in keep],
            "spec_filename": [cat["spec_filename"][j] for j in keep],
            "pos": {k: v[keep] for k, v in cat["pos"].items()},
            "layout": cat["layout"][keep],
            "target": cat["target"][keep],
        }
        m = len(keep)
    flux, ivar, snr = spectra.synthesize(batch, rng)
    for j in range(m):
        cards = [("TELESCOP", "LAMOST"), ("OBJNAME", cat["name"][j]),
                 ("RA", round(float(cat["pos"]["ra"][j]), 6)),
                 ("DEC", round(float(cat["pos"]["dec"][j]), 6)),
                 ("SNRR", round(float(snr[j]), 2)),
                 ("ORIGIN", "astrom3_jax synthetic")]  # fmt: skip
        if cat["layout"][j] == 1:
            data = spectra.fits_one_hdu(flux[j], ivar[j], cards)
        else:
            npix = spectra.NPIX - int(rng.integers(0, 10))
            data = spectra.fits_two_hdu(
                flux[j, :npix], ivar[j, :npix], spectra.WAVE[:npix], cards
            )
        fname = cat["spec_filename"][j]
        if fname.endswith(".gz"):
            data = spectra.gzip_bytes(data)
        path = pathlib.Path(root) / "spectra" / cat["target"][j] / fname
        path.write_bytes(data)


def _slice(cat, start, stop):
    """The per-star fields a worker needs, for stars [start, stop)."""
    sl = slice(start, stop)
    phys = {k: v[sl] for k, v in cat["phys"].items()}
    return {
        "phys": phys, "pos": {k: v[sl] for k, v in cat["pos"].items()},
        "true": cat["true"][sl], "target": cat["target"][sl], "name": cat["name"][sl],
        "period": cat["cat"]["period"][sl], "rv": cat["rv"][sl], "rp": cat["rp"][sl],
        "layout": cat["layout"][sl], "spec_filename": cat["spec_filename"][sl],
        "blend": cat["blend"][sl],
    }  # fmt: skip


def simulate_all(root, seed, cat, workers):
    """Runs all chunks (in a process pool if workers > 1); returns files + stats."""
    n = len(cat["true"])
    jobs = [(str(root), seed, s, min(s + CHUNK, n), _slice(cat, s, min(s + CHUNK, n)))
            for s in range(0, n, CHUNK)]  # fmt: skip
    lc_files, stats = [], []
    for files, st in workers_lib.ordered_map(
        _chunk_work, jobs, workers=workers, max_chunk=1, task="simulation",
        name=lambda job: f"stars {job[2]} to {job[3] - 1}",
    ):  # fmt: skip
        lc_files += files
        stats += st
    return lc_files, stats


# ----------------------------------------------------------------------------- tables
def _rfr(target, true, snr, rng):
    base = np.array([_RFR_BASE[t] for t in target])
    logit = (
        base + 0.8 * np.log(np.clip(snr, 0.05, None)) + rng.normal(0, 0.8, len(target))
    )
    logit -= 1.5 * (target != true)
    return np.round(0.2 + 0.8 / (1 + np.exp(-logit)), 4)


def assemble_rows(cat, stats, seed):
    """One dict per object with every CSV column."""
    n = len(cat["true"])
    col = {k: np.asarray(v, float) for k, v in cat["cat"].items()}
    for key in ("mean_vmag", "amplitude", "lksl_statistic"):
        col[key] = np.array([s[key] for s in stats])
    snr = np.array([s["snr"] for s in stats])
    rms = np.array([s["rms"] for s in stats])
    col.update(catalogue.gaia_errors(col, rms, stream_rng(seed, 10)))
    col["rfr_score"] = _rfr(cat["target"], cat["true"], snr, stream_rng(seed, 9))
    rows = []
    for i in range(n):
        row = {"id": cat["id"][i], "name": cat["name"][i], "target": cat["target"][i],
               "spec_filename": cat["spec_filename"][i]}  # fmt: skip
        for c in ALL_COLS:
            row[c] = significant(float(col[c][i]), CATALOGUE_DIGITS)
        row["true_target"] = cat["true"][i]
        row["subtype"] = cat["phys"]["subtype"][i]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- entry
def generate_release(
    output_dir,
    *,
    preset: str = "small",
    seed: int = 0,
    mislabel_fraction: float = 0.02,
    n_objects: int | None = None,
    n_unseen: int | None = None,
    workers: int | None = None,
) -> pathlib.Path:
    """Writes a synthetic raw release into output_dir and returns it.

    preset 'small' (~2,000 objects, real proportions with floors) or 'full'
    (21,440 objects in the real counts): every object has all modalities.
    'sky' and 'bigsky' (INCOMPLETE_PRESETS): the objects of 'small' or
    'full', plus twice as many incomplete objects (a light curve, and
    catalogue values or a spectrum or neither, INCOMPLETE_MIX) in the train
    split of each `full` split folder. n_objects overrides the number of
    (complete) objects (tests). Beyond the Hub layout, the split CSVs carry
    ground-truth columns (`true_target`, `subtype`) and each split folder an
    `unseen.csv` of out-of-class objects.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    base, extra_per_object = INCOMPLETE_PRESETS.get(preset, (preset, 0))
    root = pathlib.Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    cat = build_catalogue(base, seed, n_objects, mislabel_fraction, n_unseen)
    for c in sorted(set(cat["target"])):
        (root / "spectra" / c).mkdir(parents=True, exist_ok=True)
    auto_workers = workers is None
    if auto_workers:
        workers = workers_lib.default_workers(len(cat["true"]))
    lc_files, stats = simulate_all(root, seed, cat, workers)
    rows = assemble_rows(cat, stats, seed)
    extra_rows = []
    if extra_per_object:
        n_extra = extra_per_object * int(np.sum(~cat["unseen"]))
        if auto_workers:
            workers = workers_lib.default_workers(n_extra)
        extra_files, extra_rows = _incomplete_objects(
            root, base, seed, n_extra, mislabel_fraction, cat, workers
        )
        lc_files += extra_files
    write_zip(root / "photometry.zip", lc_files)
    write_splits(root, rows, cat, seed, extra_rows)
    return root


def incomplete_presence(n: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """(has metadata, has spectrum) of n incomplete objects: INCOMPLETE_MIX
    counts (rounded), in a random order; never both."""
    n_spec = int(round(INCOMPLETE_MIX["spectra"] * n))
    n_none = int(round(INCOMPLETE_MIX["neither"] * n))
    kind = np.array(["metadata"] * (n - n_spec - n_none) + ["spectra"] * n_spec
                    + ["neither"] * n_none)  # fmt: skip
    kind = kind[stream_rng(seed, 12).permutation(n)]
    return kind == "metadata", kind == "spectra"


def real_proportions(n: int) -> dict[str, int]:
    """n objects in the release's class proportions (largest remainders), no
    floors: the incomplete objects are for pre-training, not evaluation."""
    total = sum(classes.FULL_COUNTS.values())
    share = {c: n * k / total for c, k in classes.FULL_COUNTS.items()}
    counts = {c: int(v) for c, v in share.items()}
    by_remainder = sorted(share, key=lambda c: counts[c] - share[c])
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    return counts


def _incomplete_objects(root, base, seed, n, mislabel_fraction, cat, workers):
    """Light-curve files and CSV rows of n incomplete objects.

    Their own random streams (seed (seed, EXTRA_STREAM)) leave the complete
    objects untouched; names, ids and spectrum files avoid theirs.
    """
    xseed = (seed, EXTRA_STREAM)
    taken = {k: cat[k] for k in ("name", "id", "spec_filename")}
    extra = build_catalogue(
        base, xseed, n, mislabel_fraction, 0, taken, counts=real_proportions(n)
    )
    has_meta, has_spec = incomplete_presence(len(extra["true"]), xseed)
    extra["spec_filename"] = [
        f if s else "" for f, s in zip(extra["spec_filename"], has_spec, strict=True)
    ]
    for c in sorted(set(extra["target"])):
        (pathlib.Path(root) / "spectra" / c).mkdir(parents=True, exist_ok=True)
    files, stats = simulate_all(root, xseed, extra, workers)
    rows = assemble_rows(extra, stats, xseed)
    for row, meta in zip(rows, has_meta, strict=True):
        if not meta:
            row.update(dict.fromkeys(META_COLS, ""))  # blank cells: no values
    return files, rows
