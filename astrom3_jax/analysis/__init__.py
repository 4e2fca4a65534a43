"""Analyses of exported embeddings (NumPy in, files out; no JAX needed).

- `store`: the export format (`save_split`, `load_split`, manifests).
- `similarity`: nearest neighbours within/across modalities, retrieval recall.
- `classify`: prototype, k-NN and linear-probe classification, few-shot curves.
- `mislabels`: distance to the labelled class's centroid (or k-NN
  disagreement with the label), ranked.
- `outliers`: k-NN distance, isolation forest, LOF; unseen-class ROC AUC.
- `maps`: UMAP maps and subtype silhouettes.
- `report`: all of the above plus summary.json; `compare`: summaries side by side.

Each analysis module is also a command, `python -m astrom3_jax.analysis.<name>`.
scikit-learn, umap-learn and matplotlib load on first use (the 'analysis'
extra: pip install -e '.[analysis]').
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
