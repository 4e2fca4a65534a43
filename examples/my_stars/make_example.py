"""Regenerates this folder: a catalogue of 12 synthetic stars and their raw files.

    python examples/my_stars/make_example.py

The stars come from the project's synthetic survey generator
(astrom3_jax.data.synthetic, a small release with seed 0), written the way a
user would bring their own stars:

- catalog.csv: one row per star: id, name, label, split, lightcurve,
  spectrum and the 38 catalogue columns by their release names;
- lightcurves/<name>.dat: ASAS-SN light-curve files as in the release;
  one star's light curve instead as lightcurves/<name>_mag.csv, a table of
  hjd, mag, mag_err (magnitudes, no fluxes);
- spectra/<file>.fits(.gz): LAMOST files in both release layouts.

Eight stars have everything; three have no spectrum (most ASAS-SN variables
have none); one has a light curve only (no spectrum, blank catalogue
values except the 4 photometric columns a light curve needs). The `split`
column puts the incomplete stars in train.
"""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import sys
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from astrom3_jax.data import release_io, schema, synthetic  # noqa: E402

SEED = 0
N_OBJECTS = 40  # the generator's smallest useful release: >= 4 stars per class
# (class, what the star has): 'all', 'no_spectrum', 'lc_only', 'mag_table'
PLAN = [
    ("EW", "all", "train"),
    ("RRAB", "all", "train"),
    ("SR", "mag_table", "train"),
    ("EA", "all", "train"),
    ("ROT", "no_spectrum", "train"),
    ("EB", "no_spectrum", "train"),
    ("RRC", "no_spectrum", "train"),
    ("M", "lc_only", "train"),
    ("EW", "all", "validation"),
    ("RRAB", "all", "validation"),
    ("EA", "all", "test"),
    ("SR", "all", "test"),
]
COLUMNS = ["id", "name", "label", "split", "lightcurve", "spectrum", *schema.ALL_COLS]


def _pick(rows):
    """The first unused star of each planned class, in release order."""
    used, out = set(), []
    for cls, kind, split in PLAN:
        row = next(r for r in rows if r["target"] == cls and r["name"] not in used)
        used.add(row["name"])
        out.append((row, kind, split))
    return out


def _write_mag_table(dat_text: str, path: pathlib.Path):
    """hjd, mag, mag_err of a .dat file; non-detections (mag 99.99) dropped."""
    rows = [ln.split() for ln in dat_text.splitlines() if ln and ln[0].isdigit()]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["hjd", "mag", "mag_err"])
        for hjd, mag, mag_err, _, _ in rows:
            if float(mag) < 50:
                w.writerow([hjd, mag, mag_err])


def main(out: pathlib.Path = HERE) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate_release(
            tmp, preset="small", seed=SEED, n_objects=N_OBJECTS, workers=1
        )
        folder = release_io.split_folder(root, "full", 42)
        rows = [
            r
            for stem in ("train", "val", "test")
            for r in release_io.read_split_csv(
                os.path.join(folder, f"{stem}.csv"), numeric_cols=()
            )
        ]
        for sub in ("lightcurves", "spectra"):
            shutil.rmtree(out / sub, ignore_errors=True)
            (out / sub).mkdir(parents=True)
        table = []
        with zipfile.ZipFile(root / "photometry.zip") as z:
            for row, kind, split in _pick(rows):
                dat = z.read(release_io.dat_member(row["name"])).decode()
                if kind == "mag_table":
                    lc = pathlib.Path("lightcurves") / f"{row['name']}_mag.csv"
                    _write_mag_table(dat, out / lc)
                else:
                    lc = pathlib.Path("lightcurves") / f"{row['name']}.dat"
                    (out / lc).write_text(dat)
                spectrum = ""
                if kind in ("all", "mag_table"):
                    src = release_io.spectrum_path(
                        root, row["target"], row["spec_filename"]
                    )
                    spectrum = f"spectra/{row['spec_filename']}"
                    shutil.copy(src, out / spectrum)
                cells = {c: row[c] for c in schema.ALL_COLS}
                if kind == "lc_only":
                    cells.update(dict.fromkeys(schema.META_COLS, ""))
                table.append(
                    {
                        "id": row["id"],
                        "name": row["name"],
                        "label": row["target"],
                        "split": split,
                        "lightcurve": lc.as_posix(),
                        "spectrum": spectrum,
                        **cells,
                    }
                )
    with open(out / "catalog.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(table)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(table)} stars to {out} ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
