"""Analyses of exported embeddings (NumPy in, files out; no JAX needed).

`store` is the export format; every other module is an analysis and a command,
`python -m astrom3_jax.analysis.<name>` (listed in the README). scikit-learn,
umap-learn and matplotlib load on first use (`pip install -e '.[analysis]'`).
"""

from astrom3_jax.analysis.store import (
    Split,
    list_splits,
    load_split,
    read_manifest,
    save_split,
    write_manifest,
)

__all__ = [
    "Split",
    "list_splits",
    "load_split",
    "read_manifest",
    "save_split",
    "write_manifest",
]
