"""tcmalloc for XLA:CPU: detection, the restart, and the page faults it saves."""

import json
import logging
import os
import subprocess
import sys

import pytest

from astrom3_jax import host_memory, train_lib

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


_ALLOCATOR = "from astrom3_jax import host_memory; print(host_memory.allocator())"


@needs_tcmalloc
def test_allocator_sees_what_is_loaded():
    assert _run(["-c", _ALLOCATOR]) == ["glibc"]
    assert _run(["-c", _ALLOCATOR], preload=TCMALLOC) == ["tcmalloc"]


_RESTART = """
import json, os, sys
from astrom3_jax import host_memory
print("started")
status = host_memory.reexec_with_tcmalloc()
print(json.dumps({
    "status": status,
    "allocator": host_memory.allocator(),
    "argv": sys.argv[1:],
    "utf8_mode": sys.flags.utf8_mode,
    "mark": os.environ.get(host_memory.REEXEC_MARK),
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
    assert result == {
        "status": "malloc: tcmalloc",
        "allocator": "tcmalloc",
        "argv": ["a", "--b=c d"],
        "utf8_mode": 1,
        "mark": "1",
        "kept": "kept",
    }


def test_reexec_stops_when_the_preload_failed(monkeypatch):
    monkeypatch.setattr(host_memory, "allocator", lambda: "glibc")
    monkeypatch.setenv(host_memory.REEXEC_MARK, "1")
    monkeypatch.setattr(os, "execve", _no_exec)
    assert "did not load" in host_memory.reexec_with_tcmalloc()


def test_reexec_without_tcmalloc_says_how_to_install(monkeypatch):
    monkeypatch.setattr(host_memory, "allocator", lambda: "glibc")
    monkeypatch.delenv(host_memory.REEXEC_MARK, raising=False)
    monkeypatch.setattr(host_memory, "find_tcmalloc", lambda: None)
    monkeypatch.setattr(os, "execve", _no_exec)
    assert "apt install libtcmalloc-minimal4" in host_memory.reexec_with_tcmalloc()


def test_reexec_leaves_another_allocator_alone(monkeypatch):
    monkeypatch.setattr(host_memory, "allocator", lambda: "jemalloc")
    monkeypatch.setattr(os, "execve", _no_exec)
    assert host_memory.reexec_with_tcmalloc() == "malloc: jemalloc"


def test_reexec_disabled_only_reports_the_allocator(monkeypatch):
    monkeypatch.setattr(host_memory, "allocator", lambda: "glibc")
    monkeypatch.delenv(host_memory.REEXEC_MARK, raising=False)
    monkeypatch.setattr(host_memory, "find_tcmalloc", lambda: "/lib/libtcmalloc.so")
    monkeypatch.setattr(os, "execve", _no_exec)
    assert host_memory.reexec_with_tcmalloc(enabled=False) == "malloc: glibc"


def _no_exec(*args):
    raise AssertionError(f"unexpected execve{args}")


def test_trainer_warns_on_cpu_under_glibc(monkeypatch, caplog):
    monkeypatch.setattr(host_memory, "allocator", lambda: "glibc")
    with caplog.at_level(logging.WARNING):
        train_lib._warn_if_slow_allocator()
    assert "tcmalloc" in caplog.text
    caplog.clear()
    monkeypatch.setattr(host_memory, "allocator", lambda: "tcmalloc")
    with caplog.at_level(logging.WARNING):
        train_lib._warn_if_slow_allocator()
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
