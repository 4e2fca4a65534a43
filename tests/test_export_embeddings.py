"""Embedding export: every object once, in order, equal to the model's own output."""

import os

import numpy as np
import pytest

from astrom3_jax import api, errors, export_embeddings, training
from astrom3_jax.analysis import store
from astrom3_jax.data import pipeline
from tests.helpers.training import fake_examples, ft_config, tiny_config


def with_ids(examples, prefix):
    for i, e in enumerate(examples):
        e["id"] = f"EDR3 {prefix}{i:04d}".encode()
        e["name"] = f"ASASSN-V{prefix}{i}".encode()
    return examples


def sources():
    return {
        "train": with_ids(fake_examples(64, 0), "t"),
        "validation": with_ids(fake_examples(21, 1), "v"),
        "test": with_ids(fake_examples(19, 2), "s"),
    }


@pytest.fixture(scope="module")
def clip_workdir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("clip") / "run")
    c = tiny_config(num_epochs=1, max_steps_per_epoch=2)
    # Full attention: no ProbSparse key sample, so any two forward passes agree.
    c.model.photometry.attention = "full"
    training.run(c, wd, sources=sources())
    return wd


def pipeline_inputs(config, source):
    """The model inputs of one unpadded batch of the whole split."""
    (batch,) = list(
        pipeline.make_eval_batches(
            source,
            batch_size=len(source),
            modalities=tuple(config.model.modalities),
            seq_len=config.seq_len,
        )
    )
    keys = ("photometry", "photometry_mask", "spectra", "metadata")
    return {k: batch[k] for k in keys}


def direct_embeddings(model, config, source):
    """The model called on one unpadded batch of the whole split."""
    return model.embed(**pipeline_inputs(config, source))


def test_export_round_trip(clip_workdir, tmp_path):
    out = str(tmp_path / "emb")
    src = sources()
    export_embeddings.export(
        clip_workdir,
        "synthetic_small",
        ["train", "validation"],
        out,
        batch_size=16,  # 21 validation objects: the last batch is padded
        sources=src,
        progress=False,
    )
    manifest = store.read_manifest(out)
    assert manifest["splits"] == ["train", "validation"]
    model, config = api.load_model(clip_workdir)
    for split in ("train", "validation"):
        got = store.load_split(out, split)
        n = len(src[split])
        want_ids = [e["id"].decode() for e in src[split]]
        assert list(got.index["id"]) == want_ids  # every object once, in order
        np.testing.assert_array_equal(
            got.index["label"], [e["label"] for e in src[split]]
        )
        want = direct_embeddings(model, config, src[split])
        for m in config.model.modalities:
            assert got.embeddings[m].shape == (n, config.model.embed_dim)
            assert got.embeddings[m].dtype == np.float32
            np.testing.assert_allclose(
                got.embeddings[m], np.asarray(want[m]), rtol=2e-5, atol=2e-6
            )
            np.testing.assert_allclose(
                np.linalg.norm(got.embeddings[m], axis=1), 1.0, rtol=1e-5
            )
        fused = np.mean([np.asarray(want[m]) for m in config.model.modalities], 0)
        np.testing.assert_allclose(got.embeddings["fused"], fused, atol=2e-6)
        assert got.logits is None
    with pytest.raises(errors.UserError, match="not empty"):
        export_embeddings.export(
            clip_workdir, "synthetic_small", ["train"], out, sources=src
        )
    export_embeddings.export(
        clip_workdir,
        "synthetic_small",
        ["test"],
        out,
        sources=src,
        overwrite=True,
        progress=False,
    )
    assert len(store.load_split(out, "test").index["id"]) == 19


def test_classifier_export_has_logits(tmp_path):
    wd = str(tmp_path / "ft")
    c = ft_config("meta,full")
    src = sources()
    training.run(c, wd, sources=src)
    out = str(tmp_path / "emb")
    export_embeddings.export(
        wd, "synthetic_small", ["test"], out, batch_size=8, sources=src, progress=False
    )
    got = store.load_split(out, "test")
    pred = np.load(os.path.join(wd, "predictions.npz"))
    # The export of the best checkpoint reproduces the test predictions.
    np.testing.assert_allclose(got.logits, pred["logits"], rtol=1e-5, atol=1e-5)
    assert got.embeddings["metadata"].shape[0] == 19


def test_export_of_a_probsparse_checkpoint_equals_its_validation_pass(
    tmp_path, monkeypatch
):
    """The evaluation key rule: the loop's last validation pass, the export of
    the checkpoint saved right after it (another batch size) and embed() of
    the loaded model give the same embeddings (ProbSparse draws a key sample)."""
    from astrom3_jax.training import loop

    seen = {}
    evaluate = loop.Run.evaluate

    def recording(self, batches, prefix):
        metrics, outputs = evaluate(self, batches, prefix)
        seen[int(self.state["step"])] = outputs
        return metrics, outputs

    monkeypatch.setattr(loop.Run, "evaluate", recording)
    wd = str(tmp_path / "run")
    c = tiny_config(num_epochs=1, max_steps_per_epoch=2)
    assert c.model.photometry.attention == "probsparse"
    src = sources()
    training.run(c, wd, sources=src)
    ((step, validation),) = seen.items()
    out = export_embeddings.export(
        wd,
        "synthetic_small",
        ["validation"],
        str(tmp_path / "emb"),
        step="latest",
        batch_size=8,  # the validation pass ran at eval_batch_size
        sources=src,
        progress=False,
    )
    got = store.load_split(out, "validation")
    model, config = api.load_model(wd, step="latest")
    direct = direct_embeddings(model, config, src["validation"])
    for name in config.model.modalities:
        np.testing.assert_allclose(
            got.embeddings[name], validation[name], rtol=0, atol=1e-6, err_msg=name
        )
        np.testing.assert_allclose(
            direct[name], validation[name], rtol=0, atol=1e-6, err_msg=name
        )
    # The photometry encoder's sample matters: another key gives other rows.
    other = model.embed(**pipeline_inputs(config, src["validation"]), seed=7)
    assert (
        np.abs(np.asarray(other["photometry"]) - validation["photometry"]).max() > 1e-4
    )
