"""Helpers shared by several test modules (test modules never import each other).

- `paths`: the repository root and the dummy release.
- `training`: small pre-training / fine-tuning configs, fake examples in the
  stored TFDS layout, a toy classifier that compiles in about a second.
- `checkpoints`: finding and damaging Orbax's array-data files.
- `release`: reading and writing a raw release's CSV tables and files,
  building it through TFDS in this process.
- `losses`: random embeddings and an independent InfoNCE reference.
- `exports`: an export split's arrays written at once in plain NumPy.

Fixtures used by several modules live in tests/conftest.py.
"""
