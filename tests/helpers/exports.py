"""Export helpers: the files of one split written at once in plain NumPy
(what store.save_split wrote before it streamed, the oracle of the streamed
ones), fake examples lacking modalities, a model made without a checkpoint."""

import numpy as np

from astrom3_jax.analysis import store


def save_at_once(folder, embeddings, index, logits=None) -> None:
    """`<modality>.npy` (unit rows, NaN where the index flags the modality
    absent), `fused.npy` (the mean of the unit rows an object has) and
    `logits.npy`, each with one np.save, into `folder`."""
    folder.mkdir(parents=True)
    n = len(index["id"])
    here = {
        m: np.asarray(index.get(store.presence_column(m), np.ones(n)), bool)
        for m in embeddings
    }
    units = {}
    for m, x in embeddings.items():
        x = np.asarray(x, np.float64)
        unit = np.full(x.shape, np.nan)
        unit[here[m]] = x[here[m]] / np.linalg.norm(x[here[m]], axis=1, keepdims=True)
        units[m] = unit
        np.save(folder / f"{m}.npy", unit.astype(np.float32))
    count = np.sum([here[m] for m in embeddings], axis=0)
    total = np.sum([np.where(here[m][:, None], u, 0.0) for m, u in units.items()], 0)
    np.save(folder / "fused.npy", (total / count[:, None]).astype(np.float32))
    if logits is not None:
        np.save(folder / "logits.npy", np.asarray(logits).astype(np.float32))


def with_ids_and_holes(examples):
    """Fake examples (training.fake_examples) given ids of varying length and
    names; every third without a spectrum, every fifth without catalogue
    values (None: nothing stored)."""
    for i, e in enumerate(examples):
        e["id"] = f"EDR3 {7 ** (i % 5)}-{i}".encode()
        e["name"] = f"ASASSN-V{i}".encode()
        if i % 3 == 1:
            e["spectra"] = None
        if i % 5 == 2:
            e["metadata"] = None
    return examples


def fresh_model(workdir=None, step=None):
    """`api.load_model`'s (model, config) without a checkpoint: the smoke
    fused classifier (fine-tuning "all,full") initialised from seed 0, the
    same in every process."""
    from astrom3_jax import models
    from tests.helpers.training import ft_config

    config = ft_config("all,full")
    return models.init_model(config.model, seed=0), config
