"""Faults in a training run: failed saves, NaN/inf, corrupt checkpoints, resume.

The loop knows nothing of the model it trains (training/loop.py), so most
of these runs train a toy classifier on the metadata of fake examples
(both from tests/helpers/training.py) with the classification task: it
compiles in about a second, where the `smoke` AstroM3 model takes tens of
seconds on 2 busy cores. One slow test repeats the NaN case on the real
model.

A run "killed" right after a given checkpoint is simulated by a save that
raises once that checkpoint is on disk: whatever the loop held in memory is
lost, as after SIGKILL. Runs that must be shown not to hang (Orbax threads
once kept the process alive after a failed save) run in a subprocess with a
timeout.
"""

import glob
import os
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from flax import nnx

from astrom3_jax import errors, training
from astrom3_jax.training import checkpoints, loop, tasks
from astrom3_jax.training import metrics_writer as metrics_lib
from astrom3_jax.training import workdir as workdir_lib
from tests.helpers.checkpoints import damage, data_file
from tests.helpers.paths import ROOT
from tests.helpers.training import fake_sources, tiny_config, toy_build

# Two epochs of two steps, a checkpoint after every step: steps 1 (mid-epoch
# 0), 2 (end of epoch 0), 3 (mid-epoch 1), 4 (end of epoch 1).
RUN = dict(num_epochs=2, max_steps_per_epoch=2, checkpoint_every_steps=1)
TIMING = set(loop.TIMING_KEYS)


def run_toy(wd, **kw):
    """The shared loop on the toy classifier; returns its Outcome."""
    config = tiny_config(**{**RUN, **kw})
    return loop.train(
        config, wd, tasks.classification_task(), fake_sources(), build_fn=toy_build
    )


class Killed(Exception):
    """Stands for a kill right after a checkpoint was written."""


def run_killed_after(wd, step, monkeypatch, **kw):
    real_save = loop.Run.save

    def save_then_die(self, metrics=None):
        real_save(self, metrics)
        if int(self.state["step"]) == step:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(loop.Run, "save", save_then_die)
        with pytest.raises(Killed):
            run_toy(wd, **kw)


def _params(wd, step, build_fn=toy_build):
    model, _ = workdir_lib.restore_model(wd, step, build_fn=build_fn)
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _steps(wd):
    d = os.path.join(wd, "checkpoints")
    return (
        sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []
    )


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: (workdir, metrics rows)."""
    wd = str(tmp_path_factory.mktemp("reference") / "run")
    run_toy(wd)
    return wd, metrics_lib.read_metrics(wd)


@pytest.fixture(scope="module")
def killed_mid_epoch(tmp_path_factory):
    """A run killed right after the mid-epoch checkpoint of step 3 (epoch 1)."""
    wd = str(tmp_path_factory.mktemp("killed") / "run")
    with pytest.MonkeyPatch.context() as m:
        run_killed_after(wd, 3, m)
    assert _steps(wd) == [2, 3]  # latest (3) and best (2, the only one scored)
    return wd


def _copy(src, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------- mid-epoch resume


def test_mid_epoch_resume_keeps_the_epoch_averages(
    reference, killed_mid_epoch, tmp_path, capsys
):
    """Epoch 1's first step ran before the kill; its loss must still count."""
    ref_wd, ref_rows = reference
    wd = _copy(killed_mid_epoch, tmp_path)
    assert [r["epoch"] for r in metrics_lib.read_metrics(wd)] == [0]
    capsys.readouterr()
    outcome = run_toy(wd)
    assert "resumed from step 3 (epoch 1)" in capsys.readouterr().out
    rows = metrics_lib.read_metrics(wd)
    assert [r["epoch"] for r in rows] == [0, 1]
    # Bit for bit: the same two steps summed in the same order.
    assert rows[1]["train_loss"] == ref_rows[1]["train_loss"]
    assert _without_timing(rows) == _without_timing(ref_rows)
    jax.tree.map(np.testing.assert_array_equal, _params(wd, 4), _params(ref_wd, 4))
    assert (outcome.reason, outcome.latest_step) == ("finished", 4)


# ------------------------------------------------------ corrupt checkpoints


def flip_every_data_file(wd, step, item):
    """One bit in the middle of each OCDBT file of an item. Where it lands
    (zstd-compressed array bytes, a b-tree node) decides whether the read
    fails or returns altered values; either must be caught. (The checksum
    alone is tested exactly in test_checkpoints.py.)"""
    pattern = os.path.join(wd, "checkpoints", str(step), item, "ocdbt.process_*", "d")
    for path in glob.glob(os.path.join(pattern, "*")):
        damage(path, "flip")


FLIPPED = ("do not match the checksum", "cannot be read")


@pytest.mark.parametrize(
    "how, why",
    [
        ("flip", FLIPPED),
        ("truncate", ("cannot be read: ValueError: OUT_OF_RANGE",)),
        ("delete", ("cannot be read",)),
    ],
)
def test_damaged_latest_checkpoint_falls_back_to_the_previous(
    reference, killed_mid_epoch, tmp_path, capsys, how, why
):
    ref_wd, ref_rows = reference
    wd = _copy(killed_mid_epoch, tmp_path)
    if how == "flip":
        flip_every_data_file(wd, 3, "params")
    else:
        damage(data_file(wd, 3), how)
    capsys.readouterr()
    run_toy(wd)
    out = capsys.readouterr().out
    assert f"warning: skipping checkpoint 3: checkpoint 3 in {wd}/checkpoints" in out
    assert any(text in out for text in why), out
    assert f"moved it aside to {wd}/checkpoints/3.corrupt" in out
    assert "resumed from step 2 (epoch 1)" in out
    assert os.path.isdir(os.path.join(wd, "checkpoints", "3.corrupt"))
    # Resuming from step 2 repeats exactly what step 3 would have given.
    assert _without_timing(metrics_lib.read_metrics(wd)) == _without_timing(ref_rows)
    jax.tree.map(np.testing.assert_array_equal, _params(wd, 4), _params(ref_wd, 4))


def test_flipped_optimiser_state_falls_back_too(killed_mid_epoch, tmp_path, capsys):
    wd = _copy(killed_mid_epoch, tmp_path)
    flip_every_data_file(wd, 3, "train")
    capsys.readouterr()
    run_toy(wd)
    out = capsys.readouterr().out
    assert "warning: skipping checkpoint 3: " in out
    assert "the optimiser state do not match the checksum" in out or (
        "cannot be read: " in out and f"{wd}/checkpoints/3/train/" in out
    ), out
    assert "resumed from step 2 (epoch 1)" in out


# ----------------------------------------------------------------- NaN/inf


def _assert_all_finite(wd, build_fn=toy_build):
    for step in _steps(wd):
        for leaf in jax.tree.leaves(_params(wd, step, build_fn)):
            assert np.all(np.isfinite(leaf)), step


def test_nonfinite_training_loss_stops_at_its_step(tmp_path):
    wd = str(tmp_path / "run")
    with pytest.raises(
        errors.NonFiniteError, match=r"^the loss or gradient is not finite at step 1 "
    ):
        run_toy(wd, learning_rate=1e12)
    # Step 0 (finite) was saved mid-epoch as checkpoint 1; nothing after it.
    assert _steps(wd) == [1]
    _assert_all_finite(wd)
    assert metrics_lib.read_metrics(wd) == []


def test_blown_up_parameters_are_neither_logged_nor_saved(tmp_path):
    """One step per epoch: step 0's loss is finite, the model after it is not."""
    wd = str(tmp_path / "run")
    with pytest.raises(
        errors.NonFiniteError, match="^the validation loss is not finite after step 1"
    ):
        run_toy(wd, learning_rate=1e12, max_steps_per_epoch=1, checkpoint_every_steps=0)
    assert _steps(wd) == []
    assert metrics_lib.read_metrics(wd) == []


@pytest.mark.slow
def test_huge_learning_rate_on_the_real_model(tmp_path):
    wd = str(tmp_path / "run")
    c = tiny_config(learning_rate=1e12, num_epochs=2, max_steps_per_epoch=1)
    with pytest.raises(errors.NonFiniteError, match="not finite after step 1"):
        training.run(c, wd, sources=fake_sources())
    assert _steps(wd) == [] and metrics_lib.read_metrics(wd) == []


# ------------------------------------------------------------ failed saves

SAVE_FAILS = textwrap.dedent(
    """
    import errno, os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[2])
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    wd, fault = sys.argv[1], sys.argv[3]
    if fault == "disk_full_at":  # creating the directory of step N: ENOSPC
        step = sys.argv[4]
        real = os.makedirs

        def makedirs(path, *a, **k):
            if os.path.basename(str(path)).startswith(step + ".orbax-checkpoint-tmp"):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, *a, **k)

        os.makedirs = makedirs
    elif fault == "file":
        os.makedirs(wd)
        open(os.path.join(wd, "checkpoints"), "w").write("not a folder")
    from tests import test_training_faults as t
    from astrom3_jax import errors
    try:
        t.run_toy(wd, num_epochs=2, max_steps_per_epoch=1, checkpoint_every_steps=0)
    except errors.CheckpointSaveError as e:
        print("CheckpointSaveError:", e, flush=True)
        sys.exit(3)
    """
)


def _save_fails(wd, *fault):
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, "-c", SAVE_FAILS, wd, ROOT, *fault],
        capture_output=True,
        text=True,
        timeout=200,  # a hang (Orbax threads waiting 300 s) fails here
    )
    return p, time.time() - t0


def _error_line(p):
    assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-3000:]
    return next(x for x in p.stdout.splitlines() if x.startswith("CheckpointSaveError"))


def test_checkpoints_path_that_is_a_file_fails_before_training(tmp_path):
    wd = str(tmp_path / "run")
    p, seconds = _save_fails(wd, "file")
    line = _error_line(p)
    assert f"cannot write checkpoints in {wd}/checkpoints: it is a file" in line
    assert metrics_lib.read_metrics(wd) == []  # not one epoch was trained
    assert seconds < 120


def test_disk_full_during_a_save_ends_the_run_and_keeps_older_checkpoints(
    tmp_path, capsys
):
    wd = str(tmp_path / "run")
    p, seconds = _save_fails(wd, "disk_full_at", "2")
    line = _error_line(p)
    assert f"saving checkpoint 2 in {wd}/checkpoints failed: OSError: " in line
    assert "No space left on device" in line
    assert seconds < 120
    # Checkpoint 1 (end of epoch 0) is intact, and the same run resumes from it.
    assert _steps(wd) == [1]
    _assert_all_finite(wd)
    capsys.readouterr()
    out = run_toy(wd, num_epochs=2, max_steps_per_epoch=1, checkpoint_every_steps=0)
    assert "resumed from step 1 (epoch 1)" in capsys.readouterr().out
    assert (out.reason, _steps(wd)[-1]) == ("finished", 2)
    assert [r["epoch"] for r in metrics_lib.read_metrics(wd)] == [0, 1]


def test_disk_full_in_the_background_writer_is_reported_as_such(tmp_path, monkeypatch):
    """Orbax raises a failed background write again when the manager closes;
    that second raise must not replace the CheckpointSaveError."""
    import errno

    from etils import epath

    wd = str(tmp_path / "run")
    real_write = epath.Path.write_text

    def disk_full(self, *args, **kwargs):
        if f"{os.sep}2.orbax-checkpoint-tmp{os.sep}" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(epath.Path, "write_text", disk_full)
    # Orbax's writer threads end after the error; the loops they close print
    # 'Event loop is closed' as they go (the command lines drop those).
    with checkpoints.quiet_orbax_leftovers():
        with pytest.raises(
            errors.CheckpointSaveError,
            match=r"^saving checkpoint 2 in .* failed: OSError: \[Errno 28\] No space",
        ) as info:
            run_toy(wd, max_steps_per_epoch=1, checkpoint_every_steps=0)
    monkeypatch.undo()
    assert _steps(wd) == [1]
    # The summary next to the error: one epoch done, checkpoint 1 the latest.
    outcome = info.value.outcome
    assert (outcome.reason, outcome.latest_step, outcome.last["epoch"]) == (
        "stopped",
        1,
        0,
    )
