"""tcmalloc for XLA:CPU: detection, the restart, and the page faults it saves."""

import json
import logging
import os
import subprocess
import sys

import pytest

from astrom3_jax.cli import host_memory, platform

TCMALLOC = host_memory.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(
    TCMALLOC is None, reason=f"tcmalloc not installed: {host_memory.INSTALL_HINT}"
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, preload=None, **extra_env):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", host_memory.REEXEC_MARK)
    }
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=REPO, **extra_env)
    if preload:
        env["LD_PRELOAD"] = preload
    out = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


_ALLOCATOR = "from astrom3_jax.cli import host_memory; print(host_memory.allocator())"


@needs_tcmalloc
def test_allocator_sees_what_is_loaded():
    assert _run(["-c", _ALLOCATOR]) == ["glibc"]
    assert _run(["-c", _ALLOCATOR], preload=TCMALLOC) == ["tcmalloc"]


_RESTART = """
import json, os, subprocess, sys
from astrom3_jax.cli import host_memory
print("started")
status = host_memory.reexec_with_tcmalloc()
child = subprocess.run(
    [sys.executable, "-c", "from astrom3_jax.cli import host_memory as h; "
     "import os; print(h.allocator(), os.environ.get('LD_PRELOAD'))"],
    capture_output=True, text=True, check=True,
)
print(json.dumps({
    "status": status,
    "allocator": host_memory.allocator(),
    "argv": sys.argv[1:],
    "utf8_mode": sys.flags.utf8_mode,
    "mark": os.environ.get(host_memory.REEXEC_MARK),
    "preload": os.environ.get("LD_PRELOAD"),
    "child": child.stdout.strip(),
    "kept": os.environ.get("ASTROM3_TEST_VAR"),
}))
"""


@needs_tcmalloc
def test_reexec_restarts_once_under_tcmalloc_with_the_same_command(tmp_path):
    script = tmp_path / "restart.py"
    script.write_text(_RESTART)
    lines = _run(["-X", "utf8", str(script), "a", "--b=c d"], ASTROM3_TEST_VAR="kept")
    assert lines[:2] == ["started", "started"]  # ran twice: once per process
    result = json.loads(lines[2])
    # The restarted process runs under tcmalloc, but its environment no
    # longer names it: a subprocess it starts gets glibc malloc.
    assert result == {
        "status": "malloc: tcmalloc",
        "allocator": "tcmalloc",
        "argv": ["a", "--b=c d"],
        "utf8_mode": 1,
        "mark": None,
        "preload": None,
        "child": "glibc None",
        "kept": "kept",
    }


@needs_tcmalloc
def test_restarted_process_keeps_the_users_own_preload(tmp_path):
    other = "/lib/x86_64-linux-gnu/libz.so.1"
    if not os.path.exists(other):
        pytest.skip(f"{other} is not here")
    script = tmp_path / "restart.py"
    script.write_text(_RESTART)
    lines = _run([str(script)], preload=other)
    assert lines[:2] == ["started", "started"]
    result = json.loads(lines[2])
    assert result["allocator"] == "tcmalloc"
    assert result["preload"] == other
    assert result["child"] == f"glibc {other}"


_TRACED = """
import sys
from astrom3_jax.cli import host_memory
print("started")
sys.settrace(lambda *args: None)
print(host_memory.reexec_with_tcmalloc())
"""


@needs_tcmalloc
def test_no_restart_under_a_tracer():
    assert _run(["-c", _TRACED]) == [
        "started",
        "malloc: glibc (no tcmalloc restart: a debugger or tracer is attached "
        "(sys.gettrace))",
    ]


@needs_tcmalloc
def test_no_restart_when_opted_out_by_environment():
    lines = _run(["-c", _RESTART], **{host_memory.OPT_OUT: "1"})
    assert lines[0] == "started"
    assert (
        json.loads(lines[1])["status"] == "malloc: glibc (ASTROM3_NO_TCMALLOC is set)"
    )


_real_debugger_hint = host_memory.debugger_hint


class _Exec(Exception):
    """Raised by the fake execve: the restart was attempted."""


@pytest.fixture
def cpu_host(monkeypatch, tmp_path):
    """A glibc process on a CPU-only host with tcmalloc installed, whose
    execve only records: no GPU runtimes on sys.path, no device nodes."""
    monkeypatch.setattr(host_memory, "allocator", lambda: "glibc")
    monkeypatch.setattr(host_memory, "find_tcmalloc", lambda: "/lib/libtcmalloc.so")
    monkeypatch.setattr(host_memory, "debugger_hint", lambda: None)
    monkeypatch.setattr(platform, "ACCELERATOR_DEVICES", ())
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    for var in (host_memory.REEXEC_MARK, host_memory.OPT_OUT, "JAX_PLATFORMS"):
        monkeypatch.delenv(var, raising=False)

    def execve(exe, argv, env):
        raise _Exec(env["LD_PRELOAD"], env[host_memory.REEXEC_MARK])

    monkeypatch.setattr(os, "execve", execve)
    return tmp_path


@pytest.mark.parametrize("platforms", [None, "cpu", "CPU, cpu"])
def test_cpu_run_restarts(cpu_host, monkeypatch, platforms):
    if platforms is not None:
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setenv("LD_PRELOAD", "/lib/other.so")
    with pytest.raises(_Exec) as restart:
        host_memory.reexec_with_tcmalloc()
    assert restart.value.args == (
        "/lib/libtcmalloc.so:/lib/other.so",
        "/lib/libtcmalloc.so",
    )


@pytest.mark.parametrize("platforms", ["cuda", "tpu", "cuda,cpu", "cpu,rocm"])
def test_no_restart_for_an_accelerator_platform(cpu_host, monkeypatch, platforms):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory.reexec_with_tcmalloc() == (
        f"malloc: glibc (no tcmalloc restart: JAX_PLATFORMS={platforms})"
    )


@pytest.mark.parametrize("package", ["jax_cuda12_plugin", "libtpu", "jax_plugins"])
def test_an_installed_runtime_without_its_chip_still_restarts(cpu_host, package):
    """libtpu from the tpu extra on a CPU machine: a CPU run, and a fast one."""
    (cpu_host / package).mkdir()
    (cpu_host / package / "__init__.py").write_text("")
    with pytest.raises(_Exec):
        host_memory.reexec_with_tcmalloc()


def test_no_restart_when_an_accelerator_device_exists(cpu_host, monkeypatch):
    node = cpu_host / "accel0"
    node.write_text("")
    monkeypatch.setattr(
        platform, "ACCELERATOR_DEVICES", ("/nonexistent", str(cpu_host / "accel*"))
    )
    assert host_memory.reexec_with_tcmalloc() == (
        f"malloc: glibc (no tcmalloc restart: {node} exists)"
    )


def test_jax_platforms_cpu_overrides_the_hardware(cpu_host, monkeypatch):
    (cpu_host / "libtpu").mkdir()
    (cpu_host / "libtpu" / "__init__.py").write_text("")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    with pytest.raises(_Exec):
        host_memory.reexec_with_tcmalloc()


@pytest.mark.parametrize("value,restarts", [("1", False), ("yes", False), ("0", True)])
def test_environment_opt_out(cpu_host, monkeypatch, value, restarts):
    monkeypatch.setenv(host_memory.OPT_OUT, value)
    if restarts:
        with pytest.raises(_Exec):
            host_memory.reexec_with_tcmalloc()
    else:
        assert host_memory.reexec_with_tcmalloc() == (
            "malloc: glibc (ASTROM3_NO_TCMALLOC is set)"
        )


def test_no_restart_under_python_m_pdb(cpu_host, monkeypatch):
    monkeypatch.setattr(host_memory, "debugger_hint", _real_debugger_hint)
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "pdb", "train.py"])
    monkeypatch.setattr(sys, "gettrace", lambda: None)
    monkeypatch.setattr(sys, "getprofile", lambda: None)
    assert host_memory.reexec_with_tcmalloc() == (
        "malloc: glibc (no tcmalloc restart: running under python -m pdb)"
    )


def test_reexec_stops_when_the_preload_failed(cpu_host, monkeypatch):
    monkeypatch.setenv(host_memory.REEXEC_MARK, "/lib/libtcmalloc.so")
    monkeypatch.setenv("LD_PRELOAD", "/lib/libtcmalloc.so:/lib/other.so")
    assert "did not load" in host_memory.reexec_with_tcmalloc()
    assert os.environ["LD_PRELOAD"] == "/lib/other.so"
    assert host_memory.REEXEC_MARK not in os.environ


def test_reexec_without_tcmalloc_says_how_to_install(cpu_host, monkeypatch):
    monkeypatch.setattr(host_memory, "find_tcmalloc", lambda: None)
    assert "apt install libtcmalloc-minimal4" in host_memory.reexec_with_tcmalloc()


def test_reexec_leaves_another_allocator_alone(cpu_host, monkeypatch):
    monkeypatch.setattr(host_memory, "allocator", lambda: "jemalloc")
    assert host_memory.reexec_with_tcmalloc() == "malloc: jemalloc"


def test_reexec_disabled_only_reports_the_allocator(cpu_host):
    assert host_memory.reexec_with_tcmalloc(enabled=False) == "malloc: glibc"


def test_trainer_warns_on_cpu_under_glibc(monkeypatch, caplog):
    monkeypatch.setattr(host_memory, "allocator", lambda: "glibc")
    with caplog.at_level(logging.WARNING):
        host_memory.warn_if_slow_allocator()
    assert "tcmalloc" in caplog.text
    caplog.clear()
    monkeypatch.setattr(host_memory, "allocator", lambda: "tcmalloc")
    with caplog.at_level(logging.WARNING):
        host_memory.warn_if_slow_allocator()
    assert caplog.text == ""


# The jitted function's (2048, 8192) float32 intermediate is 64 MiB: glibc
# serves it with mmap on every call.
_FAULTS = """
import resource
import jax, jax.numpy as jnp

@jax.jit
def f(x, w):
    return (jnp.tanh(x @ w) @ w.T).sum()

x = jnp.ones((2048, 1024)) * 0.01
w = jnp.ones((1024, 8192)) * 1e-3
first = float(f(x, w))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
values = [float(f(x, w)) for _ in range(3)]
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
print(first, *values)
"""
_PAGES_OF_TEMP = 64 * 2**20 // 4096


@needs_tcmalloc
def test_tcmalloc_stops_the_per_call_page_faults():
    glibc_faults, glibc_values = _run(["-c", _FAULTS])
    if float(glibc_faults) < _PAGES_OF_TEMP / 2:
        pytest.skip(f"this XLA/glibc does not re-fault ({glibc_faults}/call)")
    tc_faults, tc_values = _run(["-c", _FAULTS], preload=TCMALLOC)
    assert float(tc_faults) < _PAGES_OF_TEMP / 50, (glibc_faults, tc_faults)
    assert tc_values == glibc_values  # same program, same numbers
