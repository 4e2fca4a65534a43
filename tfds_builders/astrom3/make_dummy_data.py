"""Regenerates dummy_data/: a tiny release in the exact Hub layout (deterministic).

40 objects (4 per class). Split folders full/42 (20/10/10) and sub10/0
(10/5/5). Spectra alternate the one-HDU and two-HDU LAMOST layouts, gzipped
and plain; the first light curve repeats some rows exactly; one object has a
negative parallax.

    python -m tfds_builders.astrom3.make_dummy_data [OUT_DIR]
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pathlib
import sys
import zipfile

import numpy as np

from astrom3_jax.data import preprocessing, schema

HERE = pathlib.Path(__file__).parent
N_PER_CLASS = 4
N_PIX = 600
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def _catalogue(rng, i):
    g = rng.uniform(9, 15)
    row = {
        "amplitude": rng.uniform(0.05, 2.0),
        "period": 10 ** rng.uniform(-1.3, 2.5),
        "lksl_statistic": rng.uniform(0.1, 2.0),
        "rfr_score": rng.uniform(0.3, 1.0),
        "mean_vmag": g + rng.normal(0.3, 0.1),
        "phot_g_mean_mag": g,
        "e_phot_g_mean_mag": rng.uniform(1e-4, 1e-2),
        "phot_bp_mean_mag": g + rng.uniform(0.2, 0.8),
        "e_phot_bp_mean_mag": rng.uniform(1e-4, 1e-2),
        "phot_rp_mean_mag": g - rng.uniform(0.4, 1.0),
        "e_phot_rp_mean_mag": rng.uniform(1e-4, 1e-2),
        "parallax": -0.3 if i == 5 else rng.uniform(0.05, 3.0),
        "parallax_error": rng.uniform(0.01, 0.1),
        "pmra": rng.normal(0, 5),
        "pmra_error": rng.uniform(0.01, 0.1),
        "pmdec": rng.normal(0, 5),
        "pmdec_error": rng.uniform(0.01, 0.1),
        "j_mag": g - rng.uniform(1, 2),
        "e_j_mag": rng.uniform(0.01, 0.05),
        "h_mag": g - rng.uniform(1.5, 2.5),
        "e_h_mag": rng.uniform(0.01, 0.05),
        "k_mag": g - rng.uniform(2, 3),
        "e_k_mag": rng.uniform(0.01, 0.05),
        "w1_mag": g - rng.uniform(2, 3.5),
        "e_w1_mag": rng.uniform(0.01, 0.05),
        "w2_mag": g - rng.uniform(2, 3.5),
        "e_w2_mag": rng.uniform(0.01, 0.05),
        "w3_mag": g - rng.uniform(2, 4),
        "w4_mag": g - rng.uniform(2, 5),
        "ruwe": rng.uniform(0.8, 2.0),
        "l": rng.uniform(0, 360),
        "b": rng.uniform(-90, 90),
    }
    row["parallax_over_error"] = row["parallax"] / row["parallax_error"]
    row["j_k"] = row["j_mag"] - row["k_mag"]
    row["w1_w2"] = row["w1_mag"] - row["w2_mag"]
    row["w3_w4"] = row["w3_mag"] - row["w4_mag"]
    row["bp_rp"] = row["phot_bp_mean_mag"] - row["phot_rp_mean_mag"]
    row["pm"] = float(np.hypot(row["pmra"], row["pmdec"]))
    return {k: float(v) for k, v in row.items()}


def _light_curve(rng, period, amplitude, duplicate):
    n = int(rng.integers(40, 260))
    hjd = np.sort(2457000 + rng.uniform(0, 1500, n))
    mag = 13 + amplitude / 2 * np.sin(2 * np.pi * hjd / period) + rng.normal(0, 0.02, n)
    mag_err = rng.uniform(0.01, 0.05, n)
    flux = 10 ** (-0.4 * (mag - 16.4)) * 1e3
    flux_err = flux * mag_err / 1.0857
    rows = np.stack([hjd, mag, mag_err, flux, flux_err], axis=1)
    if duplicate:
        rows = np.concatenate([rows, rows[[3, 7, 7, 20]]])[
            np.argsort(np.r_[hjd, hjd[[3, 7, 7, 20]]], kind="stable")
        ]
    lines = [
        "# ASAS-SN Sky Patrol light curve (dummy)",
        "#HJD MAG MAG_ERR FLUX FLUX_ERR",
    ]
    lines += [f"{r[0]:.5f} {r[1]:.5f} {r[2]:.5f} {r[3]:.5f} {r[4]:.5f}" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _spectrum_values(rng, wave):
    cont = 1.0 + 0.5 * (wave - 3700) / 5400 + 0.05 * np.sin(wave / 300)
    lines = sum(
        -0.3 * np.exp(-0.5 * ((wave - c) / 8) ** 2) for c in (4861, 6563, 5175, 8542)
    )
    flux = 500 * (cont + lines) * rng.uniform(0.5, 2) + rng.normal(0, 5, len(wave))
    flux[:5] = 0.0  # LAMOST edges are often zero
    ivar = 1 / (rng.uniform(4, 9, len(wave)) ** 2)
    return flux.astype(np.float32), ivar.astype(np.float32)


def one_hdu_bytes(flux, ivar, coeff0, coeff1) -> bytes:
    """LAMOST one-HDU layout: 2-D image rows flux, ivar, (a mask row)."""
    from astropy.io import fits

    image = np.stack([flux, ivar, np.zeros_like(flux)]).astype(np.float32)
    hdu = fits.PrimaryHDU(image)
    hdu.header["COEFF0"] = coeff0
    hdu.header["COEFF1"] = coeff1
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def two_hdu_bytes(flux, ivar, wave) -> bytes:
    """LAMOST two-HDU layout: binary table, one row of FLUX, IVAR, WAVELENGTH."""
    from astropy.io import fits

    n = len(flux)
    cols = [
        fits.Column(name="FLUX", format=f"{n}E", array=flux[None].astype(np.float32)),
        fits.Column(name="IVAR", format=f"{n}E", array=ivar[None].astype(np.float32)),
        fits.Column(
            name="WAVELENGTH", format=f"{n}E", array=wave[None].astype(np.float32)
        ),
        fits.Column(name="ANDMASK", format=f"{n}E", array=np.zeros((1, n), np.float32)),
    ]
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def _write_csv(path, rows, cols):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])


def _info(train_rows):
    table = {c: np.array([r[c] for r in train_rows]) for c in schema.ALL_COLS}
    mean, std = preprocessing.catalogue_stats(
        table, schema.METADATA_FUNC, schema.ALL_COLS
    )
    return {
        "classes": list(schema.CLASSES),
        "meta_cols": list(schema.META_COLS),
        "photo_cols": list(schema.PHOTO_COLS),
        "all_cols": list(schema.ALL_COLS),
        "metadata_func": schema.METADATA_FUNC,
        "mean": mean.tolist(),
        "std": std.tolist(),
    }


def generate(out_dir) -> pathlib.Path:
    out = pathlib.Path(out_dir)
    rng = np.random.default_rng(20241113)
    rows, lcs = [], []
    for ci, cls in enumerate(schema.CLASSES):
        (out / "spectra" / cls).mkdir(parents=True, exist_ok=True)
        for k in range(N_PER_CLASS):
            i = ci * N_PER_CLASS + k
            ra, dec = rng.uniform(0, 24), rng.uniform(-60, 60)
            name = (
                f"ASASSN-VJ{int(ra):02d}{int(ra * 60) % 60:02d}{i:02d}.00{dec:+06.1f}"
            )
            row = {
                "id": f"EDR3 {int(rng.integers(10**17, 10**18))}",
                "name": name,
                "target": cls,
                **_catalogue(rng, i),
            }
            lcs.append(
                (name, _light_curve(rng, row["period"], row["amplitude"], i == 0))
            )
            mjd = 56000 + i * 37
            layout_two, gz = i % 2 == 1, (i // 2) % 2 == 0
            fname = f"spec-{mjd}-DUMMY{i:03d}_sp{i % 16 + 1:02d}-{i + 1:03d}.fits"
            fname += ".gz" if gz else ""
            c0 = float(np.log10(3700.0))
            c1 = float((np.log10(9100.0) - c0) / (N_PIX - 1))
            wave = 10 ** (c0 + np.arange(N_PIX) * c1)
            flux, ivar = _spectrum_values(rng, wave)
            data = (
                two_hdu_bytes(flux, ivar, wave)
                if layout_two
                else one_hdu_bytes(flux, ivar, c0, c1)
            )
            (out / "spectra" / cls / fname).write_bytes(_gzip(data) if gz else data)
            row["spec_filename"] = fname
            rows.append(row)

    with zipfile.ZipFile(out / "photometry.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in lcs:
            zf.writestr(zipfile.ZipInfo(f"vardb_files/{name}.dat", _ZIP_DATE), data)

    cols = list(schema.ID_COLS[:3]) + list(schema.ALL_COLS) + ["spec_filename"]
    by_class = [
        rows[c * N_PER_CLASS : (c + 1) * N_PER_CLASS]
        for c in range(len(schema.CLASSES))
    ]
    folders = {
        ("full", 42): {"train": [0, 1], "val": [2], "test": [3]},
        ("sub10", 0): {"train": [1], "val": [3], "test": [0]},
    }
    for (sub, seed), parts in folders.items():
        folder = out / "splits" / sub / str(seed)
        folder.mkdir(parents=True, exist_ok=True)
        for split, ks in parts.items():
            picked = [grp[k] for k in ks for grp in by_class]
            if sub == "sub10" and split != "train":
                picked = picked[::2]
            _write_csv(folder / f"{split}.csv", picked, cols)
            if split == "train":
                info = _info(picked)
        (folder / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    return out


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "dummy_data"))
