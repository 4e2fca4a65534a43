"""Commands pin JAX to the CPU when no accelerator is attached."""

import importlib.util
import os
import subprocess
import sys

import pytest

from astrom3_jax import cli
from astrom3_jax.cli import platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_platform(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    # jax is imported in this process with its backends running: pinning
    # must not touch its config here, only the environment.
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setattr(platform, "ACCELERATOR_DEVICES", ())


def test_pins_cpu_without_an_accelerator(no_platform):
    assert platform.pin_cpu_without_accelerator()
    assert os.environ["JAX_PLATFORMS"] == "cpu"


def test_leaves_jax_platforms_alone(no_platform, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert not platform.pin_cpu_without_accelerator()
    assert os.environ["JAX_PLATFORMS"] == "tpu"


def test_does_not_pin_with_an_accelerator_device(no_platform, monkeypatch, tmp_path):
    (tmp_path / "accel0").write_text("")
    monkeypatch.setattr(platform, "ACCELERATOR_DEVICES", (str(tmp_path / "accel*"),))
    assert platform.accelerator_device() == str(tmp_path / "accel0")
    assert not platform.pin_cpu_without_accelerator()
    assert "JAX_PLATFORMS" not in os.environ


def test_every_command_pins_before_it_runs(no_platform, monkeypatch):
    seen = {}
    monkeypatch.setattr(sys, "argv", ["prog"])

    def entry(argv):
        seen["platforms"] = os.environ.get("JAX_PLATFORMS")

    with pytest.raises(SystemExit) as done:
        cli.main(entry)
    assert done.value.code in (None, 0)
    assert seen == {"platforms": "cpu"}


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="needs libtpu (the tpu extra); .ci/run installs it and runs this",
)
def test_installed_libtpu_stays_silent_on_a_cpu_machine():
    """With libtpu installed and no TPU: the CPU, no warnings (JAX imported
    first, as the commands do), while the planner can still load libtpu."""
    if platform.accelerator_device():
        pytest.skip("this machine has an accelerator")
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p
    )
    code = (
        "import jax\n"
        "from astrom3_jax.cli import platform\n"
        "platform.pin_cpu_without_accelerator()\n"
        "print(jax.devices()[0].platform)\n"
    )
    out = _run_python(code, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu"]
    assert "TPU" not in out.stderr and "libtpu" not in out.stderr, out.stderr
    # Without the pin, the same process warns: the test can see the noise.
    noisy = _run_python("import jax\nprint(jax.devices()[0].platform)\n", env)
    assert "TPU" in noisy.stderr
