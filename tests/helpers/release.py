"""A raw release's files (CSV tables, photometry.zip) read and written by
hand, the dummy release's rows, and a TFDS build in this process."""

import csv
import os
import zipfile

from astrom3_jax.data import datasets, schema
from tests.helpers.paths import DUMMY

# Each TFDS split and the stem of its CSV table under splits/<sub>/<seed>/.
SPLIT_STEMS = {"train": "train", "validation": "val", "test": "test"}
# The first two lines of an ASAS-SN light-curve (.dat) file.
ASASSN_DAT_HEADER = "# ASAS-SN light curve\nHJD MAG MAG_ERR FLUX FLUX_ERR\n"


def read_csv_rows(path):
    """The rows of a CSV file with a header line, as dicts of text cells."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, fields, rows):
    """Writes `rows` (dicts) under the header `fields`."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def edit_first_train_row(folder, **changes):
    """Changes cells of the first row of `folder`/train.csv in place."""
    path = folder / "train.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    rows[0].update(changes)
    write_csv(path, fields, rows)


def rewrite_dat(root, name, text):
    """Replaces (text) or removes (None) one member of photometry.zip."""
    src = root / "photometry.zip"
    tmp = root / "photometry.new.zip"
    member = f"vardb_files/{name}.dat"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for item in zin.infolist():
            if item.filename != member:
                zout.writestr(item, zin.read(item.filename))
        if text is not None:
            zout.writestr(member, text)
    os.replace(tmp, src)


def dummy_release_rows(*splits):
    """(split, CSV row as text) of the objects of dummy_data's full_42, split
    after split in the order given (default: train, validation, test)."""
    out = []
    for split in splits or SPLIT_STEMS:
        path = os.path.join(DUMMY, "splits", "full", "42", f"{SPLIT_STEMS[split]}.csv")
        out += [(split, r) for r in read_csv_rows(path)]
    return out


def write_catalog(path, rows, columns=None):
    """Writes a user's catalogue table; columns default to every key of the
    rows in first-seen order, missing cells empty. Returns the path as text."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
    return str(path)


def prepare_in_process(config, data_dir, manual_dir, **kw):
    """Builds `config` from `manual_dir` into `data_dir` without worker
    processes; returns the TFDS builder."""
    return datasets.prepare(config, str(data_dir), str(manual_dir), num_workers=0, **kw)


def as_str(x):
    """A stored text feature (bytes or not) as str."""
    return x.decode() if isinstance(x, bytes) else str(x)


def examples_by_name(builder, split):
    """{object name: example} of one split of a built data set."""
    ds = builder.as_data_source(split)
    return {as_str(ds[i]["name"]): ds[i] for i in range(len(ds))}


def extract_dats(folder):
    """The dummy release's light curves (.dat) extracted into folder."""
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(os.path.join(DUMMY, "photometry.zip")) as z:
        for m in z.namelist():
            if m.endswith(".dat"):
                with open(os.path.join(folder, os.path.basename(m)), "wb") as f:
                    f.write(z.read(m))


def catalog_row(split, r, lc_dir, spec_root, *, cat_dir, absolute=False):
    """The catalogue row of a release row; cells copied as text (exact floats)."""
    lc = os.path.join(lc_dir, f"{r['name']}.dat")
    spec = os.path.join(spec_root, r["target"], r["spec_filename"])
    if not absolute:
        lc, spec = os.path.relpath(lc, cat_dir), os.path.relpath(spec, cat_dir)
    out = {"id": r["id"], "name": r["name"], "label": r["target"], "split": split}
    out.update(lightcurve=lc, spectrum=spec)
    out.update({c: r[c] for c in schema.ALL_COLS})
    return out
