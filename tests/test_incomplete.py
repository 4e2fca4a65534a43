"""Objects lacking modalities end to end: training, resuming, export."""

import os

import numpy as np
import pytest

from astrom3_jax import export_embeddings, training
from astrom3_jax.analysis import store
from astrom3_jax.training import metrics_writer as metrics_lib
from tests.helpers.training import fake_examples, tiny_config


def with_holes(examples, seed, prefix):
    """Every object keeps its light curve; about 70% lose the spectrum and
    10% the catalogue values (None: nothing stored), as in the sky preset."""
    rng = np.random.default_rng(seed)
    for i, e in enumerate(examples):
        e["id"] = f"EDR3 {prefix}{i:04d}".encode()
        e["name"] = e["id"]
        if rng.uniform() < 0.7:
            e["spectra"] = None
        if rng.uniform() < 0.1:
            e["metadata"] = None
    return examples


def sources():
    return {
        "train": with_holes(fake_examples(64, 0), 0, "t"),
        "validation": with_holes(fake_examples(21, 1), 1, "v"),
    }


# Slow (about a minute on 2 cores): run by `-m slow`, as CI does.
@pytest.mark.slow
def test_pre_training_with_holes_is_finite_and_resumes_exactly(tmp_path):
    whole = str(tmp_path / "whole")
    training.run(tiny_config(num_epochs=2), whole, sources=sources())
    rows = metrics_lib.read_metrics(whole)
    assert len(rows) == 2
    for row in rows:
        for k, v in row.items():
            assert np.isfinite(v), (k, v)
    # Stopped after one epoch and started again: the same numbers.
    split = str(tmp_path / "split")
    training.run(tiny_config(num_epochs=1), split, sources=sources())
    with open(os.path.join(split, "config.json")) as f:
        text = f.read()
    with open(os.path.join(split, "config.json"), "w") as f:
        f.write(text.replace('"num_epochs": 1', '"num_epochs": 2'))
    training.run(tiny_config(num_epochs=2), split, sources=sources())
    again = metrics_lib.read_metrics(split)
    timing = ("train_samples_per_s", "epoch_time_s")
    for a, b in zip(rows, again, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }


def test_export_keeps_every_object_with_its_presence(tmp_path):
    src = sources()
    wd = str(tmp_path / "run")
    training.run(tiny_config(num_epochs=1, max_steps_per_epoch=2), wd, sources=src)
    out = export_embeddings.export(
        wd,
        "synthetic_sky",
        ["validation"],
        str(tmp_path / "emb"),
        batch_size=8,
        sources=src,
        progress=False,
    )
    got = store.load_split(out, "validation")
    val = src["validation"]
    assert [str(i) for i in got.index["id"]] == [e["id"].decode() for e in val]
    for name, field in (("spectra", "spectra"), ("metadata", "metadata")):
        want = np.array([e[field] is not None for e in val])
        np.testing.assert_array_equal(got.present(name), want)
        emb = got.embeddings[name]
        assert np.isnan(emb[~want]).all() and np.isfinite(emb[want]).all()
    assert got.present("photometry").all()
    # fused: the mean of the unit vectors an object has.
    parts = [np.nan_to_num(got.embeddings[m]) for m in got.modalities]
    count = sum(got.present(m).astype(float) for m in got.modalities)
    np.testing.assert_allclose(
        got.embeddings["fused"], sum(parts) / count[:, None], rtol=1e-5, atol=1e-6
    )
