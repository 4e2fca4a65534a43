"""Finding and damaging the array-data files Orbax writes for a checkpoint."""

import glob
import os


def data_file(wd, step, item="params"):
    """The biggest array-data file Orbax wrote: the arrays live in an OCDBT
    key-value store (zarr chunks) under <step>/<item>/ocdbt.process_<i>/d/."""
    pattern = os.path.join(wd, "checkpoints", str(step), item, "ocdbt.process_*", "d")
    files = glob.glob(os.path.join(pattern, "*"))
    assert files, f"no OCDBT data files under {pattern}"
    return max(files, key=os.path.getsize)


def damage(path, how):
    """Damages one file in place: "flip" one bit, "truncate" to a third, or
    "delete" it."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how == "flip":  # one bit in the middle of the stored array bytes
        data[len(data) // 2] ^= 0x04
    elif how == "truncate":
        data = data[: len(data) // 3]
    elif how == "delete":
        os.remove(path)
        return
    with open(path, "wb") as f:
        f.write(data)
