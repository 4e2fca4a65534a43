"""The command lines, run as a user runs them (subprocesses).

A mistake (a bad value, an unknown data set, a misspelt field, a workdir of
another run) is one clear message and exit status 1, before anything is
written or any data is read. A run says how it started and ends with a
summary; absl/Orbax INFO logs appear only with --verbosity / -v.

Where training is needed, a small script runs the real command (flags,
cli.main, train.main) with the data swapped for fake examples and the model
for a toy classifier (tests/helpers/training.py).
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from astrom3_jax.configs import finetune, pretrain
from astrom3_jax.training import checkpoints
from astrom3_jax.training import metrics_writer as metrics_lib
from tests.helpers.checkpoints import damage, data_file
from tests.helpers.paths import ROOT

ENV = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
}
PRETRAIN = ("astrom3_jax.train", "configs/pretrain.py:smoke")
FINETUNE = ("astrom3_jax.finetune", "configs/finetune.py:photo,sub10,smoke")
ABSL_INFO = re.compile(r"^I\d{4} ", re.MULTILINE)  # absl's INFO line prefix


def command(module, config, workdir, *args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", module, "--config", config, "--workdir", workdir]
        + list(args),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
    )


def assert_one_clear_error(p, *expected):
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stderr.startswith("error: "), p.stderr[-3000:]
    assert p.stderr.count("error: ") == 1, p.stderr
    for text in expected:
        assert text in p.stderr, p.stderr


@pytest.mark.parametrize("entry", [PRETRAIN, FINETUNE], ids=["train", "finetune"])
@pytest.mark.parametrize(
    "arg, expected",
    [
        (
            "--config.model.photometry.attention=fool",
            [
                "invalid config:",
                "model.photometry.attention must be one of ('probsparse', 'full'), "
                "got 'fool'",
            ],
        ),
        (
            "--config.dataset=synthetic_smal",
            [
                "unknown data set config 'synthetic_smal' (did you mean "
                "'synthetic_small'?)",
                "<subset>_<seed> for the real release",
            ],
        ),
        (
            "--config.batchsize=3",
            [
                "--config.batchsize: the config has no field 'batchsize'",
                'Did you mean "batch_size" instead of "batchsize"?',
            ],
        ),
        (
            "--config.batch_size=three",
            ["--config.batch_size=three: invalid literal for int()"],
        ),
    ],
    ids=["bad_value", "unknown_dataset", "misspelt_field", "wrong_type"],
)
def test_config_mistakes_are_one_message_and_write_nothing(
    tmp_path, entry, arg, expected
):
    wd = tmp_path / "run"
    p = command(*entry, str(wd), arg)
    assert_one_clear_error(p, *expected)
    assert not wd.exists()  # no config.json, no directory


@pytest.mark.parametrize(
    "config, expected",
    [
        ("configs/pretrain.py:smokey", "unknown variant 'smokey'; choose from"),
        ("configs/nowhere.py:smoke", "cannot load the config file"),
    ],
)
def test_config_file_mistakes_are_one_message(tmp_path, config, expected):
    p = command("astrom3_jax.train", config, str(tmp_path / "run"))
    assert_one_clear_error(p, expected)


@pytest.mark.parametrize(
    "entry, config",
    [
        (PRETRAIN, pretrain.get_config("smoke")),
        (FINETUNE, finetune.get_config("photo,sub10,smoke")),
    ],
    ids=["train", "finetune"],
)
def test_workdir_of_another_run_is_refused_before_reading_data(tmp_path, entry, config):
    """The data set named here is not built: reading it would fail with
    another message, so this one proves the workdir is checked first."""
    wd, data_dir = str(tmp_path / "run"), str(tmp_path / "no_data")
    seed = config.seed
    config.dataset, config.data_dir, config.seed = "sub10_42", data_dir, seed + 1
    checkpoints.save_or_check_config(wd, config)
    with open(os.path.join(wd, "config.json")) as f:
        before = f.read()
    p = command(
        *entry, wd, "--config.dataset=sub10_42", f"--config.data_dir={data_dir}"
    )
    assert_one_clear_error(
        p,
        f"{wd} holds a run with a different config:",
        f"seed: workdir has {seed + 1}, now {seed}",
    )
    with open(os.path.join(wd, "config.json")) as f:
        assert f.read() == before
    assert not os.path.exists(data_dir)


# --------------------------------------------------- runs through the CLI

TRAIN_ON_FAKES = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from astrom3_jax import cli, train, training
    from astrom3_jax.cli import training_command
    from astrom3_jax.training import loop, runner, tasks
    from tests.helpers.training import fake_sources, toy_build

    # The command's own run, on fake data with a toy classifier.
    real_run = runner.run
    tasks.for_config = lambda config: tasks.classification_task()

    def run_on_fakes(config, workdir, **kw):
        return real_run(
            config, workdir, sources=fake_sources(), build_fn=toy_build, **kw
        )

    training.run = run_on_fakes
    stop = int(os.environ.get("KILL_AFTER_CHECKPOINT", "0"))
    if stop:
        real_save = loop.Run.save

        def save_then_die(self, metrics=None):
            real_save(self, metrics)
            if int(self.state["step"]) == stop:
                os._exit(9)  # as abrupt as SIGKILL, right after the checkpoint

        loop.Run.save = save_then_die
    full = os.environ.get("DISK_FULL_AT_CHECKPOINT")
    if full:  # Orbax's writer threads hit ENOSPC for that checkpoint
        import errno
        from etils import epath

        real_write = epath.Path.write_text

        def write_text(self, *args, **kwargs):
            if f"{os.sep}{full}.orbax-checkpoint-tmp{os.sep}" in str(self):
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real_write(self, *args, **kwargs)

        epath.Path.write_text = write_text
    sys.argv = ["astrom3_jax.train", *sys.argv[2:]]
    training_command.define_flags("configs/pretrain.py:smoke")
    cli.main(train.main)
    """
)
TINY = [
    "--config",
    "configs/pretrain.py:smoke",
    "--config.seq_len=32",
    "--config.model.photometry.seq_len=32",
    "--config.batch_size=16",
    "--config.eval_batch_size=16",
    "--config.num_epochs=2",
    "--config.max_steps_per_epoch=2",
    "--config.checkpoint_every_steps=1",
]


def train_on_fakes(wd, *args, kill_after=0, disk_full_at=""):
    env = {
        **ENV,
        "KILL_AFTER_CHECKPOINT": str(kill_after),
        "DISK_FULL_AT_CHECKPOINT": str(disk_full_at),
    }
    return subprocess.run(
        [sys.executable, "-c", TRAIN_ON_FAKES, ROOT, *TINY, "--workdir", wd, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_resume_summary_and_quiet_logs(tmp_path):
    wd = str(tmp_path / "run")
    # Killed right after the mid-epoch checkpoint of step 3 (epoch 1).
    p = train_on_fakes(wd, kill_after=3)
    assert p.returncode == 9, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.startswith("started from scratch\nepoch 0: loss=")
    assert not ABSL_INFO.search(p.stderr), p.stderr[:3000]  # quiet by default
    assert "tracked_metric" not in p.stderr  # mid-epoch saves have no metrics
    assert "Traceback" not in p.stderr

    p = train_on_fakes(wd, "-v", "1")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.startswith("resumed from step 3 (epoch 1)\n")
    assert ABSL_INFO.search(p.stderr)  # -v 1 brings the INFO logs back
    assert "orbax" in p.stderr.lower()
    rows = metrics_lib.read_metrics(wd)
    assert [r["epoch"] for r in rows] == [0, 1]
    # The best checkpoint is a scored one (epoch ends) with the highest
    # validation accuracy; the summary shows its metrics.jsonl line.
    ckpts = f"{wd}/checkpoints"
    summary = p.stdout[p.stdout.index("run ended:") :].splitlines()
    assert summary[0] == "run ended: reached num_epochs; 2 epochs"
    best = re.fullmatch(r"best checkpoint: step (\d+) \((.*)\): (.*)", summary[1])
    row = next(r for r in rows if r["step"] == int(best[1]))
    assert row["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert best[2] == (
        f"epoch={row['epoch']}, val_loss={row['val_loss']:.4g}, "
        f"val_accuracy={row['val_accuracy']:.4g}"
    )
    assert best[3] == f"{ckpts}/{row['step']}"
    assert summary[2:] == [
        f"latest checkpoint: step 4: {ckpts}/4",
        f"checkpoints: {ckpts}",
    ]

    p = train_on_fakes(wd)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "this run has already ended (finished)" in p.stdout
    assert (
        "run ended: nothing to do: this workdir's run had already ended; 2 epochs"
        in p.stdout
    )
    assert f"latest checkpoint: step 4: {ckpts}/4" in p.stdout
    assert not ABSL_INFO.search(p.stderr)
    assert len(metrics_lib.read_metrics(wd)) == 2
    with open(os.path.join(wd, "config.json")) as f:
        assert json.load(f)["num_epochs"] == 2


# Slow (two CLI runs, about 20 s): the fallback itself is tested in
# test_training_faults; this checks only what the CLI prints about it.
@pytest.mark.slow
def test_a_damaged_checkpoint_is_skipped_in_one_warning(tmp_path):
    """Orbax's unfinished reads of the damaged file once printed their own
    tracebacks (and a page of TensorStore spec) after the warning."""
    wd = str(tmp_path / "run")
    p = train_on_fakes(wd, kill_after=3)
    assert p.returncode == 9, p.stdout[-2000:] + p.stderr[-3000:]
    damage(data_file(wd, 3), "truncate")
    p = train_on_fakes(wd)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    warning, resumed = p.stdout.splitlines()[:2]
    assert warning.startswith(
        f"warning: skipping checkpoint 3: checkpoint 3 in {wd}/checkpoints cannot "
        "be read: ValueError: OUT_OF_RANGE: "
    )
    assert warning.endswith(f"; moved it aside to {wd}/checkpoints/3.corrupt")
    assert resumed == "resumed from step 2 (epoch 1)"
    for noise in ("Traceback", "Exception ignored", "tensorstore", "error: "):
        assert noise not in p.stderr, p.stderr[-3000:]


def test_a_run_stopped_by_nan_says_where_it_stands(tmp_path):
    """lr 1e12 x a warm-up factor of 1e-14 is 0.01 in epoch 0, which trains
    and saves; epoch 1 runs at 1e12 and blows the model up, so it stops
    before its metrics line or checkpoint."""
    wd = str(tmp_path / "run")
    p = train_on_fakes(
        wd, "--config.learning_rate=1e12", "--config.warmup_epochs=1",
        "--config.warmup_start_factor=1e-14", "--config.warmup_per_step=False",
        "--config.max_steps_per_epoch=1", "--config.checkpoint_every_steps=0",
    )  # fmt: skip
    assert_one_clear_error(
        p, "error: the validation loss is not finite after step 2 (end of epoch 1)"
    )
    (row,) = metrics_lib.read_metrics(wd)
    ckpts = f"{wd}/checkpoints"
    assert p.stdout.splitlines()[-4:] == [
        "run ended: stopped by an error (see the error message); 1 epochs",
        f"best checkpoint: step 1 (epoch=0, val_loss={row['val_loss']:.4g}, "
        f"val_accuracy={row['val_accuracy']:.4g}): {ckpts}/1",
        f"latest checkpoint: step 1: {ckpts}/1",
        f"checkpoints: {ckpts}",
    ]
    assert (row["epoch"], row["step"]) == (0, 1)


def test_disk_full_is_one_error_not_orbax_tracebacks(tmp_path):
    wd = str(tmp_path / "run")
    p = train_on_fakes(wd, "--config.max_steps_per_epoch=1", disk_full_at=2)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [x for x in p.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: saving checkpoint 2 in {wd}/checkpoints failed: OSError: "
        "[Errno 28] No space left on device"
    )
    # Epoch 1's line is in metrics.jsonl (written before its save), but only
    # epoch 0 is checkpointed; a restart redoes epoch 1 and rewrites its line.
    first = metrics_lib.read_metrics(wd)[0]
    ckpts = f"{wd}/checkpoints"
    assert p.stdout.splitlines()[-4:] == [
        "run ended: stopped by an error (see the error message); 1 epochs",
        f"best checkpoint: step 1 (epoch=0, val_loss={first['val_loss']:.4g}, "
        f"val_accuracy={first['val_accuracy']:.4g}): {ckpts}/1",
        f"latest checkpoint: step 1: {ckpts}/1",
        f"checkpoints: {ckpts}",
    ]
