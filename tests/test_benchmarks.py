"""Every script in benchmarks/ runs, at a tiny size, and exits 0.

Benchmarks call the library's internals (the trainer's step, the
evaluation path, the input pipeline), so an API change breaks them first;
running each one here for a step or two catches that the day it happens.
Timings are not checked: the sizes are far too small to mean anything.
Each runs as its own process, as a user runs it, with the test session's
environment (8 simulated CPU devices, XLA's slow optimisations off).
PyTorch is no dependency: the PyTorch side runs where some interpreter has
it (`torch_python`), and is skipped, saying so, where none has.
"""

import functools
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
# Imported by the scripts, not run on its own (tests/test_step_timing.py).
LIBRARIES = {"step_timing.py"}
# Scripts with no tiny case, and why. calibration_ood.py scores a fine-tuned
# workdir on a synthetic data set's `unseen` split, which no fixture here
# builds in seconds; what it computes is tests/test_calibration.py's and
# test_finetune.py's calibration tests.
WITHOUT_CASE = {"calibration_ood.py"}


@functools.cache
def torch_python() -> str | None:
    """An interpreter with PyTorch: this one, else $TORCH_PYTHON, else the
    venv the benchmarks' docs suggest (/tmp/torchvenv); None if none has it."""
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    for python in (os.environ.get("TORCH_PYTHON"), "/tmp/torchvenv/bin/python"):
        if python and os.path.exists(python):
            check = [python, "-c", "import torch"]
            if subprocess.run(check, capture_output=True, timeout=120).returncode == 0:
                return python
    return None


def run(script: str, *args: str, timeout: float = 300, python=None) -> str:
    """stdout of `python benchmarks/<script> args`; fails unless it exits 0."""
    cmd = [python or sys.executable, str(BENCHMARKS / script), *args]
    try:
        done = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} still running after {timeout} s")
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny synthetic release (about 70 objects; a few seconds)."""
    from astrom3_jax.data.synthetic import release as synthetic

    root = tmp_path_factory.mktemp("release")
    synthetic.generate_release(
        root, preset="small", seed=3, n_objects=60, n_unseen=6, workers=1
    )
    return root


# Each case: how to run it tiny, and a line its output must hold.
CASES = {
    "train_step.py": (
        lambda tmp, rel: [
            "--variant=smoke",
            "--batch_sizes=8",
            "--steps=1",
            "--warmup=0",
            "--notcmalloc",
        ],
        "samples/s",
    ),
    "inference.py": (
        lambda tmp, rel: [
            "--model=small",
            "--batch_sizes",
            "8",
            "--rounds=1",
            "--steps=1",
            # the PyTorch side too, where an interpreter has torch
            f"--torch_python={torch_python() or ''}",
            "--notcmalloc",
        ],
        "export step",
    ),
    "matmul_floor.py": (
        lambda tmp, rel: ["--variant=smoke", "--batch_size=2", "--repeats=1"],
        "unavoidable matmuls",
    ),
    "input_pipeline.py": (
        lambda tmp, rel: [
            f"--data_dir={tmp / 'tfds'}",
            "--num_examples=32",
            "--batch_size=8",
            "--steps=2",
        ],
        "samples/s",
    ),
    "derived_features.py": (
        lambda tmp, rel: ["--per_class=2", "--classes=RRAB"],
        "ms/star",
    ),
    "fast_start.py": (
        lambda tmp, rel: ["--model=small", "--rounds=1"],
        "2nd process / 1st",
    ),
    "catalog_preprocessing.py": (
        lambda tmp, rel: ["--n_objects=30", "--workers", "0", "--repeats=1"],
        "objects/s",
    ),
    "lightcurve_shape.py": (
        lambda tmp, rel: [
            "--dataset=full_42",
            f"--data_dir={tmp / 'tfds'}",
            f"--manual_dir={REPO / 'tfds_builders' / 'astrom3' / 'dummy_data'}",
            "--preset=smoke",
            "--seeds=0",
            "--variants=lightcurve",
            "--shuffle_draws=1",
            f"--work={tmp / 'work'}",
            "--notcmalloc",
        ],
        "light curve - catalogue numbers (trees)",
    ),
    "predict.py": (
        lambda tmp, rel: [
            "--model=smoke",
            "--n_objects=24",
            "--batch_size=8",
            "--rounds=1",
            "--notcmalloc",
        ],
        "samples/s",
    ),
    "scale_growth.py": (
        lambda tmp, rel: [
            "--sizes",
            "30",
            "60",
            "--steps",
            "build_release",
            "epoch_cache",
            "export",
            "--batch_size=8",
            f"--work={tmp / 'scale'}",
            f"--out={tmp / 'scale.json'}",
        ],  # fmt: skip
        "time exponent b",
    ),
    "synthetic_realism.py": (
        lambda tmp, rel: [f"--release={rel}", "--n_estimators=10"],
        "balanced accuracy",
    ),
    "synthetic_plots.py": (
        lambda tmp, rel: [f"--release={rel}", f"--out={tmp / 'plots'}"],
        "",
    ),
    "ood_separability.py": (
        lambda tmp, rel: [f"--release={rel}", "--n_estimators=5"],
        "supervised forest (ceiling)",
    ),
    "rfr_signal.py": (
        lambda tmp, rel: [f"--release={rel}", "--n_estimators=5"],
        "| amplitude, log period, LKSL |",
    ),
    "torch_train_step.py": (
        lambda tmp, rel: ["--batch_sizes", "2", "--steps=1", "--malloc=system"],
        "samples/s",
    ),
}
NEEDS_RELEASE = {
    "synthetic_realism.py",
    "synthetic_plots.py",
    "ood_separability.py",
    "rfr_signal.py",
}
NEEDS_TORCH = {"torch_train_step.py"}


def test_every_script_has_a_case():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - LIBRARIES - WITHOUT_CASE
    assert scripts == set(CASES), (
        "add a tiny-size case to CASES for every benchmark script: "
        f"missing {sorted(scripts - set(CASES))}, stale {sorted(set(CASES) - scripts)}"
    )


# Slow (run by `-m slow`, as CI does): scale_growth.py times three sizes,
# fast_start.py starts four processes, lightcurve_shape.py trains a classifier,
# and train_step.py, predict.py and inference.py compile several models; each
# takes 10-30 s even at a tiny size.
SLOW_CASES = (
    "scale_growth.py",
    "fast_start.py",
    "lightcurve_shape.py",
    "train_step.py",
    "predict.py",
    "inference.py",
)


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(s, marks=pytest.mark.slow) if s in SLOW_CASES else s
        for s in sorted(CASES)
    ],
)
def test_benchmark_runs_at_a_tiny_size(script, tmp_path, request):
    python = None
    if script in NEEDS_TORCH:
        python = torch_python()
        if python is None:
            pytest.skip(
                f"{script} needs PyTorch: neither this interpreter nor "
                "$TORCH_PYTHON nor /tmp/torchvenv/bin/python has it"
            )
    args, expected = CASES[script]
    rel = request.getfixturevalue("release") if script in NEEDS_RELEASE else None
    out = run(script, *args(tmp_path, rel), python=python)
    assert expected in out, out[-3000:]
    if script == "inference.py" and torch_python():
        assert "JAX/PyTorch" in out, out[-3000:]
    if script == "scale_growth.py":
        check_scale_growth(tmp_path / "scale.json")
    if script == "synthetic_plots.py":
        made = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
        assert made == [
            "class_counts.png",
            "cmd.png",
            "lightcurves.png",
            "period_amplitude.png",
            "spectra.png",
        ]


def check_scale_growth(path):
    """Its JSON: a row per step and size with positive times, object counts
    that grow with the size and peak memory of a real process; a growth
    entry per step between the two sizes."""
    import json

    got = json.loads(path.read_text())
    steps = ("generate", "build_release", "epoch_cache", "export")
    rows = {(r["step"], r["size"]): r for r in got["rows"]}
    for step in steps:
        small, large = rows[step, 30], rows[step, 60]
        for r in (small, large):
            assert r["wall_s"] > 0 and r["objects"] > 0, r
            assert 30 < r["peak_rss_mib"] < 16_000, r
        assert large["objects"] > small["objects"], (small, large)
    assert rows["imports", 0]["peak_rss_mib"] > 30
    grown = {g["step"]: g for g in got["growth"]}
    assert set(steps) <= set(grown), grown
    assert grown["build_release"]["objects_ratio"] > 1
    assert "time_target_met" in grown["build_release"]
    assert "memory_target_met" in grown["export"]
    assert got["machine"]["cpus"] >= 1
