"""The trainer: a step on 8 devices equals one device, a run, exact resume.

All use the real AstroM3 model at the `smoke` size on random examples in the
stored TFDS layout (no data set to prepare).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from astrom3_jax import training
from astrom3_jax.configs import pretrain
from astrom3_jax.training import checkpoints, loop, optim, sharding, tasks
from astrom3_jax.training import metrics_writer as metrics_lib
from astrom3_jax.training import workdir as workdir_lib
from tests.helpers.paths import ROOT
from tests.helpers.training import fake_examples, fake_sources, tiny_config


def standin_build(model_cfg, rngs):
    """The real model builder (tests used a stand-in before models landed)."""
    from astrom3_jax.models import build_clip_model

    return build_clip_model(model_cfg, rngs)


def test_configs_build():
    for v in ("paper", "cpu", "smoke"):
        c = pretrain.get_config(v)
        assert isinstance(c, ml_collections.ConfigDict)
    paper = pretrain.get_config("paper")
    assert (paper.batch_size, paper.learning_rate, paper.grad_clip) == (
        512,
        0.00392,
        45.0,
    )
    assert paper.model.photometry.dropout == 0.245


def test_optimizer_is_adam_with_coupled_l2():
    c = pretrain.get_config("paper")
    tx = optim.make_optimizer(c)
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.25])}
    up, _ = tx.update(g, tx.init(p), p)
    # First Adam step: m/(sqrt(v)+eps) with bias correction = sign(g + wd*p).
    gd = g["w"] + c.weight_decay * p["w"]
    np.testing.assert_allclose(up["w"], gd / (jnp.abs(gd) + c.eps), rtol=1e-5)


def test_warmup_and_plateau():
    c = pretrain.get_config("paper")
    assert optim.warmup_factor(c, 0, 10) == pytest.approx(1e-5)
    assert optim.warmup_factor(c, 55, 10) == pytest.approx(1e-5 + (1 - 1e-5) / 2)
    assert optim.warmup_factor(c, 100, 10) == 1.0
    s = optim.Schedule()
    stops = [s.end_of_epoch(c, e, 1.0) for e in range(10, 17)]
    # Best at epoch 10, then 4 bad epochs > patience 3: one reduction.
    assert s.lr_scale == pytest.approx(c.plateau_factor)
    assert stops == [False] * 6 + [True]  # patience 6 on validation loss


def _reference_step(model, batch, lr, tx, opt_state, key):
    """Whole batch on one device, loss written out independently."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # The ProbSparse sample key the train step draws at step 0.
    sample = jax.random.fold_in(jax.random.fold_in(key, 0), 1)

    def loss_fn(params):
        m = nnx.merge(graphdef, params, rest)
        emb = m(batch, rngs=nnx.Rngs(sample=sample))  # eval mode: no dropout
        total = 0.0
        for a, b in m.pairs:
            logits = m.logit_scale(a, b) * emb[a] @ emb[b].T
            total += -jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=1)))
            total += -jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=0)))
        return total

    loss, grads = jax.value_and_grad(loss_fn)(params)
    return loss, grads


# Slow (about 30 s): the whole train step on 8 devices. The default run keeps
# the sharded loss and gradients against one device (test_losses.py).
@pytest.mark.slow
def test_train_step_on_8_devices_matches_one_device():
    c = tiny_config()
    mesh = sharding.make_mesh(8)
    from astrom3_jax.data import pipeline

    loader = pipeline.make_train_loader(
        fake_examples(16, 3),
        batch_size=16,
        seed=0,
        seq_len=c.seq_len,
        modalities=c.model.modalities,
    )
    batch = next(loader)
    model = standin_build(c.model, nnx.Rngs(0))
    model.eval()  # dropout off: the two computations must agree exactly
    tx = optax.identity()  # so that the step's update is exactly -lr * grad
    parts = loop.split_model(model, nnx.Param)
    model.eval()
    state = {"step": jnp.zeros((), jnp.int32), "params": parts.params}
    state["opt_state"] = tx.init(parts.params)
    params0 = jax.device_get(nnx.to_pure_dict(state["params"]))
    want_loss, want_grads = _reference_step(
        model, {k: jnp.asarray(v) for k, v in batch.items()}, 0.01, tx,
        state["opt_state"], jax.random.key(0),
    )  # fmt: skip
    # The eval-mode graph: dropout off, as in the reference computation.
    step = loop.make_train_step(parts.eval_def, tx, mesh, tasks.clip_task())
    with jax.set_mesh(mesh):
        state, frozen, rest = sharding.replicate(
            (state, parts.frozen, parts.rest), mesh
        )
        new, metrics = step(
            state, frozen, rest, sharding.shard_batch(batch, mesh),
            jnp.float32(0.01), sharding.replicate(jax.random.key(0), mesh),
        )  # fmt: skip
    np.testing.assert_allclose(metrics["loss"], want_loss, rtol=1e-6)
    got = jax.tree.map(
        lambda new, old: (old - new) / 0.01,
        jax.device_get(nnx.to_pure_dict(new["params"])),
        params0,
    )
    want = nnx.to_pure_dict(want_grads)
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(want))
    jax.tree.map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale),
        got,
        want,
    )


def test_step_rngs_differ_per_device_but_share_sample_key():
    mesh = sharding.make_mesh(8)

    def per_device(key):
        r = loop.step_rngs(key, 3)
        d = jax.random.key_data(r.dropout())[None]
        s = jax.random.key_data(r.sample())[None]
        return d, s

    f = sharding.data_parallel(
        per_device, mesh, in_specs=P(), out_specs=(P("data"), P("data"))
    )
    d, s = jax.jit(f)(jax.random.key(0))
    assert len({tuple(np.asarray(x).ravel()) for x in d}) == 8
    assert len({tuple(np.asarray(x).ravel()) for x in s}) == 1


def test_train_and_evaluate_runs_and_writes(tmp_path):
    wd = str(tmp_path / "run")
    c = tiny_config()
    c.num_epochs, c.max_steps_per_epoch = 2, 2
    out = training.run(c, wd, sources=fake_sources(), build_fn=standin_build).last
    assert out["epoch"] == 1 and np.isfinite(out["val_loss"])
    rows = metrics_lib.read_metrics(wd)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert "val_full_recall@1/photometry->spectra" in rows[-1]
    assert os.listdir(os.path.join(wd, "tensorboard"))
    model, cfg = workdir_lib.restore_model(wd, "latest", build_fn=standin_build)
    assert cfg == c
    # Started again, a finished run trains no further and reports its end.
    again = training.run(c, wd, sources=fake_sources(), build_fn=standin_build).last
    assert again["val_loss"] == out["val_loss"]
    assert len(metrics_lib.read_metrics(wd)) == 2
    with pytest.raises(ValueError, match="different config"):
        training.run(
            tiny_config(seed=1), wd, sources=fake_sources(), build_fn=standin_build
        )
    with pytest.raises(ValueError, match="does not divide"):
        training.run(
            tiny_config(batch_size=12), str(tmp_path / "b"), sources=fake_sources()
        )


RUNNER = textwrap.dedent(
    """
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[2])
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from tests import test_train as t
    from astrom3_jax import training
    c = t.tiny_config(num_epochs=4, checkpoint_every_steps=1)
    training.run(
        c, sys.argv[1], sources=t.fake_sources(80, 16), build_fn=t.standin_build
    )
    """
)


def _launch(wd):
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, wd, ROOT],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _latest_step(wd):
    d = os.path.join(wd, "checkpoints")
    steps = [int(x) for x in os.listdir(d) if x.isdigit()] if os.path.isdir(d) else []
    return max(steps, default=-1)


def _params(wd):
    model, _ = workdir_lib.restore_model(wd, "latest", build_fn=standin_build)
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_parameters(tmp_path):
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    p = _launch(ref)
    assert p.wait(timeout=300) == 0, p.stdout.read().decode()[-3000:]
    n_kills = 0
    # Kill once the run has saved step k, after a short random delay so the
    # kill lands anywhere: mid-step, mid-save, mid-evaluation.
    rng = np.random.default_rng(0)
    for k in (3, 9, 14):
        p = _launch(killed)
        while p.poll() is None and _latest_step(killed) < k:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            n_kills += 1
        p.wait()
    p = _launch(killed)
    assert p.wait(timeout=300) == 0, p.stdout.read().decode()[-3000:]
    assert n_kills >= 1
    jax.tree.map(np.testing.assert_array_equal, _params(killed), _params(ref))
    rows = metrics_lib.read_metrics(killed)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    want = [r["val_loss"] for r in metrics_lib.read_metrics(ref)]
    assert [r["val_loss"] for r in rows] == want


def test_missing_real_dataset_says_how_to_build(tmp_path):
    c = tiny_config(dataset="full_42", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(
        FileNotFoundError, match="python -m tfds_builders.build --config full_42"
    ):
        training.run(c, str(tmp_path / "wd"), build_fn=standin_build)


def test_config_docstring_has_the_commands():
    for v in ("paper", "cpu", "smoke"):
        assert f"configs/pretrain.py:{v}" in pretrain.__doc__


MULTIHOST = textwrap.dedent(
    """
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[4]
    sys.path.insert(0, sys.argv[2])
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    import jax
    n_proc, pid = int(sys.argv[5]), int(sys.argv[6])
    if n_proc > 1:
        jax.distributed.initialize(
            coordinator_address="localhost:" + sys.argv[3],
            num_processes=n_proc, process_id=pid,
        )
    from tests import test_train as t
    from astrom3_jax import training
    c = t.tiny_config(num_epochs=2, max_steps_per_epoch=2)
    training.run(
        c, sys.argv[1], sources=t.fake_sources(64, 21), build_fn=t.standin_build
    )
    """
)


@pytest.mark.slow
def test_two_hosts_train_like_one_host(tmp_path):
    """2 processes x 2 devices reach the parameters of 1 process x 4 devices."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])

    def launch(wd, n_dev, n_proc, pid):
        return subprocess.Popen(
            [sys.executable, "-c", MULTIHOST, wd, ROOT, port, n_dev, n_proc, pid],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    p = launch(one, "4", "1", "0")
    assert p.wait(timeout=300) == 0, p.stdout.read().decode()[-3000:]
    procs = [launch(two, "2", "2", str(i)) for i in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stdout.read().decode()[-3000:]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        _params(two),
        _params(one),
    )
    assert [r["epoch"] for r in metrics_lib.read_metrics(two)] == [0, 1]


PRETRAIN_SMOKE = os.path.join(ROOT, "tests", "fixtures", "pretrain_smoke")


def _record_fixture_module():
    """tests/fixtures/pretrain_smoke/record_fixture.py (CPU signature, paths)."""
    import importlib.util

    path = os.path.join(PRETRAIN_SMOKE, "record_fixture.py")
    spec = importlib.util.spec_from_file_location("pretrain_smoke_record", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shared_loop_reproduces_the_pre_refactor_metrics(tmp_path):
    """Pre-training moved onto the task-agnostic loop: same numbers, bit for bit.

    XLA:CPU's numbers depend on the CPU class and the jax/jaxlib release, so
    the reference is the pre-refactor run recorded on a machine of this one's
    signature, compared exactly; on a machine without one, the original
    recording is compared within a relative 1e-5 (see the fixture README).
    """
    rec = _record_fixture_module()
    exact = os.path.exists(rec.fixture_path())
    path = rec.fixture_path() if exact else rec.ORIGINAL
    with open(path) as f:
        want = [json.loads(line) for line in f]
    wd = str(tmp_path / "run")
    training.run(tiny_config(), wd, sources=fake_sources())
    got = metrics_lib.read_metrics(wd)
    assert len(got) == len(want) == 3
    how = (
        f"no fixture for CPU signature {rec.cpu_signature()} "
        f"({rec.cpu_signature_text()}): compared within rtol=1e-5 to "
        f"{os.path.basename(path)}; bit-exactness is checked only on machines "
        "with a recorded fixture; to record one, see "
        "tests/fixtures/pretrain_smoke/README.md"
    )
    timing = ("train_samples_per_s", "epoch_time_s")
    c = tiny_config()
    steps = len(fake_sources()["train"]) // c.batch_size
    scale = 1.0  # the plateau scale during an epoch: the one logged before it
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        # `lr` was the base rate before; it is now the rate the epoch's last
        # step applied (warm-up included). The training itself is unchanged.
        last = (w["epoch"] + 1) * steps - 1
        schedule = optim.Schedule(lr_scale=scale)
        assert g["lr"] == optim.learning_rate(c, schedule, last, steps)
        scale = g["lr_scale"]
        for k in w:
            if k in timing or k == "lr":
                continue
            if exact:
                assert g[k] == w[k], (w["epoch"], k, g[k], w[k], path)
            else:
                assert g[k] == pytest.approx(w[k], rel=1e-5, abs=0), (
                    w["epoch"],
                    k,
                    how,
                )
    if not exact:
        warnings.warn(how, stacklevel=1)


def test_workdir_of_another_run_is_refused_before_any_data_is_read(tmp_path):
    """From Python too: the data set (here never built) is not even looked at."""
    wd = str(tmp_path / "run")
    checkpoints.save_or_check_config(wd, tiny_config(seed=1))
    c = tiny_config(dataset="full_42", data_dir=str(tmp_path / "no_data"))
    with pytest.raises(ValueError, match="different config"):
        training.run(c, wd)
    assert not os.path.exists(str(tmp_path / "no_data"))
