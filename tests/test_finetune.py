"""Fine-tuning on the shared loop: init_from, the leak guard, eval files, resume.

The pre-training these runs start from is written by a subprocess on 2
devices, while the tests run on 8: restoring must not depend on the device
count.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from astrom3_jax import errors, models, training
from astrom3_jax.configs import base, finetune
from astrom3_jax.data import modalities, pipeline
from astrom3_jax.training import (
    calibration,
    calibration_files,
    checkpoints,
    init_from,
    loop,
    reports,
    sharding,
    tasks,
)
from astrom3_jax.training import workdir as workdir_lib
from tests.helpers.paths import ROOT
from tests.helpers.training import fake_examples, fake_sources, ft_config

PRETRAIN_2_DEVICES = textwrap.dedent(
    """
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[2])
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from tests.helpers.training import fake_sources, tiny_config
    from astrom3_jax import training
    # keep_best=2: two epochs' checkpoints stay, so init_from_step can pick
    # one that is not the default (best).
    c = tiny_config(num_epochs=2, max_steps_per_epoch=2, keep_best=2)
    training.run(c, sys.argv[1], sources=fake_sources())
    """
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("pretrain") / "run")
    p = subprocess.run(
        [sys.executable, "-c", PRETRAIN_2_DEVICES, wd, ROOT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return wd


def ft_sources():
    src = fake_sources()
    src["test"] = fake_examples(19, 2)  # 19: the last test batch is padded
    return src


def _flat(state):
    pure = nnx.to_pure_dict(state)
    flat = jax.tree_util.tree_flatten_with_path(pure)[0]
    return {"/".join(str(p.key) for p in path): np.asarray(v) for path, v in flat}


def _start(config, workdir):
    """The loop's start (resume / init_from / scratch) without training."""
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        return loop.Run(config, workdir, tasks.for_config(config), mesh, ft_sources())


@pytest.mark.parametrize("mode", ["photo", "all"])
def test_init_from_takes_exactly_the_shared_arrays(pretrained, tmp_path, mode):
    c = ft_config(f"{mode},full,clip", init_from=pretrained)
    run = _start(c, str(tmp_path / "ft"))
    assert run.start_message.startswith("initialised from")
    source, _ = workdir_lib.restore_model(pretrained, "best")
    got = _flat(nnx.state(run.model, nnx.Param))
    fresh = _flat(nnx.state(models.init_model(c.model, seed=c.seed), nnx.Param))
    if mode == "photo":
        want = {
            f"encoder/{k[len('encoders/photometry/') :]}": v
            for k, v in _flat(nnx.state(source, nnx.Param)).items()
            if k.startswith("encoders/photometry/")
        }
    else:  # encoders, projections and temperatures, under `clip/`
        want = {f"clip/{k}": v for k, v in _flat(nnx.state(source, nnx.Param)).items()}
    heads = {k for k in got if k.startswith("fc/")}
    assert heads == {"fc/kernel", "fc/bias"}
    assert set(got) == set(want) | heads
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    for k in heads:  # the head is new: exactly a fresh initialisation
        np.testing.assert_array_equal(got[k], fresh[k])
    # and the encoder really differs from a fresh one (pre-training moved it)
    k = next(iter(want))
    assert not np.array_equal(got[k], fresh[k])


def test_init_from_step_is_honoured(pretrained, tmp_path):
    with checkpoints.make_manager(pretrained) as m:
        steps, best = sorted(m.all_steps()), m.best_step()
    # A step that is not the default ('best'): code ignoring the option fails.
    others = [s for s in steps if s != best]
    assert others, f"the pre-training kept only its best step {steps}"
    pick = others[0]
    c = ft_config("meta,full,clip", init_from=pretrained, init_from_step=str(pick))
    model, _ = init_from.load_source(c)
    want, _ = workdir_lib.restore_model(pretrained, pick)
    default, _ = workdir_lib.restore_model(pretrained, "best")
    a, b = _flat(nnx.state(model, nnx.Param)), _flat(nnx.state(want, nnx.Param))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    d = _flat(nnx.state(default, nnx.Param))
    assert any(not np.array_equal(a[k], d[k]) for k in a)


def test_sizes_come_from_init_from(pretrained, tmp_path):
    """The user sets task, data and hyperparameters; the sizes come from the
    pre-training (here 32-row light curves, d_model 8), and a size set
    explicitly that contradicts it is refused with the difference named."""
    c = finetune.get_config("all,full,clip,smoke")
    c.init_from = pretrained
    source = workdir_lib.load_any_config(pretrained)
    assert c.seq_len != source.seq_len  # the preset's sizes differ
    init_from.take_architecture(c)
    assert c.seq_len == c.model.photometry.seq_len == source.model.photometry.seq_len
    for name in c.model.modalities:
        for f in modalities.entry(name).architecture:
            assert list(np.atleast_1d(c.model[name][f])) == list(
                np.atleast_1d(source.model[name][f])
            ), (name, f)
    assert c.model.embed_dim == source.model.embed_dim
    bad = finetune.get_config("all,full,clip,smoke")
    bad.init_from = pretrained
    bad.model.photometry.d_model = 64
    with pytest.raises(
        errors.ConfigError, match=r"model.photometry.d_model: you set 64"
    ):
        init_from.take_architecture(bad)


def test_a_mistyped_init_from_leaves_nothing_behind(tmp_path):
    wd = tmp_path / "ft"
    c = ft_config("meta,full,clip", init_from=str(tmp_path / "no_such_run"))
    with pytest.raises(errors.ConfigError, match="no_such_run"):
        training.run(c, str(wd), sources=ft_sources())
    assert not wd.exists() or not os.listdir(wd)


def test_seed_and_release_guard(pretrained, tmp_path):
    # Pre-trained on synthetic_small (split seed 42): seed 0 would leak.
    c = ft_config(
        "meta,full,clip", init_from=pretrained, dataset="synthetic_small_full_0"
    )
    with pytest.raises(errors.DataLeakError, match="split seed 42"):
        _start(c, str(tmp_path / "a"))
    c = ft_config("meta,full,clip", init_from=pretrained, dataset="full_42")
    with pytest.raises(errors.DataLeakError, match="release synthetic_small"):
        _start(c, str(tmp_path / "b"))
    c.allow_data_mismatch = True
    assert _start(c, str(tmp_path / "c")).start_message.startswith("initialised")
    # A different subset of the same release and seed is the paper's protocol.
    c = ft_config("meta,sub10,clip", init_from=pretrained)
    assert _start(c, str(tmp_path / "d")).start_message.startswith("initialised")


def test_published_names_tell_the_seed():
    cfg = {"imported_from": "/cache/AstroMLCore--AstroM3-CLIP-66"}
    assert init_from.data_of(cfg, "runs/x") == ("hub", 66)
    assert init_from.data_of({}, "AstroMLCore/AstroM3-CLIP") == ("hub", 42)
    assert init_from.data_of({}, "AstroMLCore/AstroM3-CLIP-photo") is None
    assert init_from.data_of({"dataset": "synthetic_full_sub25_12"}, "x") == (
        "synthetic_full",
        12,
    )


def test_linear_probe_trains_only_the_head(pretrained, tmp_path):
    c = ft_config("spectra,full,clip", init_from=pretrained, freeze="encoders")
    run = _start(c, str(tmp_path / "probe"))
    trained = _flat(run.parts.params)
    assert set(trained) == {"fc/kernel", "fc/bias"}
    assert any(k.startswith("encoder/") for k in _flat(run.parts.frozen))


def test_eval_json_matches_predictions(tmp_path):
    wd = str(tmp_path / "ft")
    c = ft_config("meta,full")
    report = training.run(c, wd, sources=ft_sources()).reports["test"]
    with open(os.path.join(wd, "eval.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(report))
    pred = np.load(os.path.join(wd, "predictions.npz"))
    labels, logits = pred["label"], pred["logits"]
    assert len(labels) == 19 and logits.shape == (19, 10)  # padded rows dropped
    want_labels = np.array([e["label"] for e in fake_examples(19, 2)])
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(pred["id"], [str(i) for i in range(19)])
    p = logits.argmax(1)
    np.testing.assert_array_equal(pred["pred"], p)
    assert saved["accuracy"] == pytest.approx(np.mean(p == labels))
    conf = np.zeros((10, 10), int)
    for t, q in zip(labels, p, strict=True):
        conf[t, q] += 1
    assert saved["confusion_matrix"] == conf.tolist()
    recalls, f1s = [], []
    for k in range(10):
        tp = conf[k, k]
        prec = tp / conf[:, k].sum() if conf[:, k].sum() else 0.0
        rec = tp / conf[k].sum()
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        recalls.append(rec)
        f1s.append(f1)
        got = saved["per_class"][saved["class_names"][k]]
        assert got["support"] == conf[k].sum()
        assert got["recall"] == pytest.approx(rec)
        assert got["f1"] == pytest.approx(f1)
    assert saved["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert saved["macro_f1"] == pytest.approx(np.mean(f1s))
    assert os.path.getsize(os.path.join(wd, "confusion.png")) > 1000
    # the test loss is the mean cross-entropy of the saved logits
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert saved["loss"] == pytest.approx(-logp[np.arange(19), labels].mean(), rel=1e-5)


def test_clip_preset_needs_init_from(tmp_path):
    with pytest.raises(errors.ConfigError, match="init_from"):
        training.run(
            ft_config("photo,sub10,clip"), str(tmp_path / "x"), sources=ft_sources()
        )
    c = ft_config("photo,sub10", dataset="synthetic_small_sub25_42")
    with pytest.raises(errors.ConfigError, match="subset"):
        training.run(c, str(tmp_path / "y"), sources=ft_sources())


def test_paper_presets_carry_the_published_runs():
    c = finetune.get_config("photo,full,clip")
    assert (c.learning_rate, c.beta1, c.weight_decay, c.plateau_factor) == (
        9.34e-4,
        0.835,
        4.66e-4,
        0.385,
    )
    assert c.model.photometry.dropout == 0.149 and c.grad_clip == 5.0
    a = finetune.get_config("all,sub10")
    assert a.model.modalities == ("photometry", "spectra", "metadata")
    assert (a.model.photometry.dropout, a.model.spectra.dropout) == (0.058, 0.331)
    assert a.model.metadata.dropout == 0.263 and a.grad_clip == 0.0
    assert a.dataset == "sub10_42" and a.num_epochs == 50
    assert len(finetune.PAPER_RUNS) == 32
    with pytest.raises(ValueError, match="not understood"):
        finetune.get_config("photo,full,clipp")


def test_fused_classifier_scored_with_spectra_withheld(tmp_path):
    """A `report` entry of config.evals with spectra withheld equals the
    classifier called without spectra, object by object, and leaves eval.json
    alone."""
    wd = str(tmp_path / "ft")
    c = ft_config("all,full", num_epochs=1, modality_dropout=0.5)
    c.evals["test_without_spectra"] = base.eval_entry(
        "report", "test", "end", "test_", withhold=("spectra",), files=False
    )
    src = ft_sources()
    got = training.run(c, wd, sources=src).reports
    full, held = got["test"], got["test_without_spectra"]
    assert held["withheld"] == ["spectra"] and held["count"] == len(src["test"])
    with open(os.path.join(wd, "eval_without_spectra.json")) as f:
        assert json.load(f)["accuracy"] == held["accuracy"]
    with open(os.path.join(wd, reports.EVAL_FILE)) as f:
        assert json.load(f)["accuracy"] == full["accuracy"]
    model, _ = workdir_lib.restore_model(wd, "best")
    (batch,) = list(
        pipeline.make_eval_batches(
            src["test"],
            batch_size=len(src["test"]),
            modalities=tuple(c.model.modalities),
            seq_len=c.seq_len,
        )
    )
    logits = model(
        photometry=batch["photometry"],
        photometry_mask=batch["photometry_mask"],
        metadata=batch["metadata"],
    )
    pred = np.argmax(np.asarray(logits), axis=1)
    want = float(np.mean(pred == batch["label"]))
    assert held["accuracy"] == pytest.approx(want)


# Slow (about a minute on 2 cores): run by `-m slow`, as CI does.
@pytest.mark.slow
def test_modality_dropout_reaches_the_training_loss(tmp_path, monkeypatch):
    """--config.modality_dropout changes what a fused classifier learns."""
    seen = []
    train = loop.train

    def spy(config, workdir, task, *args, **kwargs):
        seen.append(task)
        return train(config, workdir, task, *args, **kwargs)

    monkeypatch.setattr(loop, "train", spy)
    params = {}
    for p in (0.0, 0.5):
        wd = str(tmp_path / f"p{p}")
        c = ft_config("all,full", num_epochs=1, modality_dropout=p)
        training.run(c, wd, sources=ft_sources())
        model, _ = workdir_lib.restore_model(wd, "latest")
        params[p] = _flat(nnx.state(model, nnx.Param))
    assert seen[0].loss_fn is not seen[1].loss_fn
    assert any(not np.array_equal(params[0.0][k], params[0.5][k]) for k in params[0.0])


def test_modality_dropout_never_drops_everything():
    names = ("photometry", "spectra", "metadata")
    n = 4000
    batch = {"label": jnp.zeros((n,), jnp.int32)}
    batch["spectra_present"] = jnp.asarray(np.arange(n) % 2, jnp.float32)
    out = tasks.drop_modalities(batch, names, 0.5, jax.random.key(0))
    kept = np.stack([np.asarray(out[f"{m}_present"]) for m in names], axis=1)
    assert kept.sum(axis=1).min() >= 1  # never all of an object's modalities
    assert not kept[np.arange(n) % 2 == 0, 1].any()  # absent stays absent
    # Rows with all three: each modality kept with probability about 1/2,
    # plus the rescue of rows that would have lost all (1/8 of them).
    full = kept[np.arange(n) % 2 == 1]
    rate = full.mean(axis=0)
    np.testing.assert_allclose(rate, 0.5 + (1 / 8) / 3, atol=0.04)


def test_calibration_is_fitted_on_the_best_checkpoint(tmp_path):
    """The `calibrate` evaluator's temperature and OOD statistics equal
    those fitted by hand on the best model's validation and training
    outputs; calibration_files.load gives them back. A metadata classifier:
    no ProbSparse key sample, so any batch split gives the same outputs."""
    wd = str(tmp_path / "ft")
    c = ft_config("meta,full", num_epochs=1)
    src = ft_sources()
    summary = training.run(c, wd, sources=src).reports["calibration"]
    model, _ = workdir_lib.restore_model(wd, "best")
    names = tuple(c.model.modalities)

    def outputs(split):
        (batch,) = list(
            pipeline.make_eval_batches(
                src[split],
                batch_size=len(src[split]),
                modalities=names,
                seq_len=c.seq_len,
            )  # fmt: skip
        )
        out = model.predict_outputs(batch, rngs=None)
        return {k: np.asarray(v) for k, v in out.items()}, np.asarray(batch["label"])

    val, y_val = outputs("validation")
    train, y_train = outputs("train")
    t = calibration.fit_temperature(val["logits"], y_val)
    assert summary["temperature"] == pytest.approx(t, rel=1e-4)
    got = calibration_files.load(wd)
    assert got.temperature == summary["temperature"]
    # No light curves read: no density of their numbers.
    assert got.inputs is None and summary["ood_scores"] == ["head_mahalanobis"]
    f_train, _ = calibration.head_features(train, names)
    want = calibration.OutOfDistribution.fit(f_train, y_train, c.model.num_classes)
    np.testing.assert_allclose(got.ood.means, want.means, rtol=1e-4, atol=1e-6)
    f_val, _ = calibration.head_features(val, names)
    np.testing.assert_allclose(
        got.ood.reference_scores, np.sort(want.score(f_val)), rtol=1e-3
    )
    probs = calibration.softmax(val["logits"])
    assert summary["validation_ece"][0] == pytest.approx(
        calibration.expected_calibration_error(probs, y_val), abs=1e-5
    )
    assert summary["validation_nll"][1] <= summary["validation_nll"][0] + 1e-9
