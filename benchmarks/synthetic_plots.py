"""Data-card plots of a synthetic release (docs/synthetic/*.png).

    python benchmarks/synthetic_plots.py --release DIR [--out docs/synthetic]

Needs matplotlib (the 'analysis' extra).
"""

from __future__ import annotations

import argparse
import csv
import io
import pathlib
import zipfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from astrom3_jax.data.synthetic import CLASSES  # noqa: E402

try:  # run as a script (benchmarks/ on sys.path) or as benchmarks.synthetic_plots
    from synthetic_realism import read_rows, read_spectrum
except ImportError:  # pragma: no cover
    from benchmarks.synthetic_realism import read_rows, read_spectrum

COLOURS = dict(zip(CLASSES, plt.get_cmap("tab10").colors, strict=True))


def _lc(zf, name):
    data = np.loadtxt(
        io.StringIO(zf.read(f"vardb_files/{name}.dat").decode()), skiprows=2
    )
    good = data[:, 1] < 50
    return data[good, 0], data[good, 1]


def light_curves(root, rows, out, per_class=3):
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(10, 17))
    with zipfile.ZipFile(root / "photometry.zip") as zf:
        for i, c in enumerate(CLASSES):
            members = [r for r in rows if r["target"] == c and r["true_target"] == c]
            for j, r in enumerate(members[:per_class]):
                t, mag = _lc(zf, r["name"])
                p = float(r["period"])
                ph = (t - t.min()) / p % 1.0
                ax = axes[i, j]
                for k in (0, 1):
                    ax.plot(ph + k, mag, ".", ms=2, color=COLOURS[c])
                ax.invert_yaxis()
                ax.set_title(f"{c} {r['subtype']} P={p:.3g} d", fontsize=8)
                ax.tick_params(labelsize=6)
    axes[-1, 1].set_xlabel("phase (two cycles)")
    fig.tight_layout()
    fig.savefig(out / "lightcurves.png", dpi=80)
    plt.close(fig)


def spectra_plot(root, rows, out, per_class=2):
    fig, axes = plt.subplots(len(CLASSES), 1, figsize=(10, 17), sharex=True)
    for i, c in enumerate(CLASSES):
        members = [r for r in rows if r["target"] == c and r["true_target"] == c]
        if c in ("M", "ROT"):  # one of each subtype
            subtypes = sorted({r["subtype"] for r in members})
            members = [next(r for r in members if r["subtype"] == s) for s in subtypes]
        for k, r in enumerate(members[:per_class]):
            path = root / "spectra" / r["target"] / r["spec_filename"]
            wave, flux = read_spectrum(path)
            f = flux / np.median(flux[(wave > 6000) & (wave < 8000)])
            axes[i].plot(wave, f + 1.2 * k, lw=0.5, label=f"{r['subtype'] or c}")
        axes[i].set_ylabel(c)
        axes[i].set_ylim(-0.2, 3.4)
        axes[i].legend(fontsize=6, loc="upper right")
    axes[-1].set_xlabel("vacuum wavelength (A)")
    fig.tight_layout()
    fig.savefig(out / "spectra.png", dpi=80)
    plt.close(fig)


def _scatter(rows, x, y, out, fname, xlabel, ylabel, invert=False):
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for c in CLASSES:
        sel = [r for r in rows if r["target"] == c]
        ax.scatter(
            [x(r) for r in sel], [y(r) for r in sel], s=3, label=c, color=COLOURS[c]
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if invert:
        ax.invert_yaxis()
    ax.legend(markerscale=3, fontsize=7)
    fig.tight_layout()
    fig.savefig(out / fname, dpi=90)
    plt.close(fig)


def class_counts(rows, unseen, out):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    counts = [sum(r["target"] == c for r in rows) for c in CLASSES]
    ax.bar(CLASSES, counts, color=[COLOURS[c] for c in CLASSES])
    names = sorted({r["true_target"] for r in unseen})
    ax.bar(
        names, [sum(r["true_target"] == n for r in unseen) for n in names], color="grey"
    )
    ax.set_ylabel("objects (grey: unseen.csv)")
    fig.tight_layout()
    fig.savefig(out / "class_counts.png", dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--release", required=True)
    parser.add_argument("--out", default="docs/synthetic")
    args = parser.parse_args()
    root, out = pathlib.Path(args.release), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(root)
    with open(root / "splits" / "full" / "42" / "unseen.csv") as f:
        unseen = list(csv.DictReader(f))
    light_curves(root, rows, out)
    spectra_plot(root, rows, out)

    def log_p(r):
        return np.log10(float(r["period"]))

    def abs_g(r):
        return float(r["phot_g_mean_mag"]) + 5 * np.log10(float(r["parallax"]) / 100)

    _scatter(rows, log_p, lambda r: float(r["amplitude"]), out, "period_amplitude.png",
             "log10 catalogue period (d)", "amplitude (mag)")  # fmt: skip
    good = [r for r in rows if float(r["parallax_over_error"]) > 5]
    _scatter(good, lambda r: float(r["bp_rp"]), abs_g, out, "cmd.png",
             "BP-RP (observed)", "M_G (parallax/error > 5)", invert=True)  # fmt: skip
    class_counts(rows, unseen, out)


if __name__ == "__main__":
    main()
