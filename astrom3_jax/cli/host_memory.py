"""Run XLA:CPU under tcmalloc: glibc re-faults the step's buffers every step.

Command-line entry points call `reexec_with_tcmalloc()` first; it restarts
the command once with tcmalloc preloaded when that helps. Why, and when it
does not restart: docs/design.md.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

from astrom3_jax.cli import platform

# Set, to the preloaded path, for the restarted process only: it tells that
# process which LD_PRELOAD entry is ours, and a failed preload cannot loop.
REEXEC_MARK = "ASTROM3_JAX_TCMALLOC_REEXEC"
# Set to 1 to never restart under tcmalloc.
OPT_OUT = "ASTROM3_NO_TCMALLOC"

# Debuggers that a restart would leave behind (or start a second time).
_DEBUGGER_MODULES = ("pdb", "debugpy", "pydevd", "pudb")

_LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    os.path.join(sys.prefix, "lib"),  # conda's gperftools
)

INSTALL_HINT = (
    "install tcmalloc (Debian/Ubuntu: apt install libtcmalloc-minimal4; "
    "conda: conda install gperftools) or start Python with "
    "LD_PRELOAD=<path to libtcmalloc_minimal.so.4>"
)


def allocator() -> str:
    """'tcmalloc', 'jemalloc', 'mimalloc', 'glibc' or 'other' for this process."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "other"  # not Linux
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc" if "libc.so.6" in maps else "other"


def find_tcmalloc() -> str | None:
    """Path of an installed tcmalloc shared library, or None."""
    for directory in _LIBRARY_DIRS:
        for stem in ("libtcmalloc_minimal.so*", "libtcmalloc.so*"):
            found = sorted(glob.glob(os.path.join(directory, stem)))
            if found:
                return found[0]
    for name in ("tcmalloc_minimal", "tcmalloc"):
        soname = ctypes.util.find_library(name)
        if soname:
            return soname
    return None


def accelerator_hint() -> str | None:
    """Why this run will likely compute on a GPU or TPU, or None for CPU.

    Decided without starting JAX (that would be too late to restart
    cheaply): JAX_PLATFORMS when set, else an accelerator device node
    (`platform.ACCELERATOR_DEVICES`). An installed runtime without its chip
    (libtpu on a CPU machine) does not count: commands pin such a run to
    the CPU (`platform.pin_cpu_without_accelerator`).
    """
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        others = [p for p in platforms.split(",") if p.strip() not in ("", "cpu")]
        return f"JAX_PLATFORMS={platforms}" if others else None
    device = platform.accelerator_device()
    return f"{device} exists" if device else None


def debugger_hint() -> str | None:
    """The debugger, tracer or profiler attached to this process, or None
    (a restart would leave it behind)."""
    if sys.gettrace() is not None:
        return "a debugger or tracer is attached (sys.gettrace)"
    if sys.getprofile() is not None:
        return "a profiler is attached (sys.getprofile)"
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+
    if monitoring is not None:
        for tool in (monitoring.DEBUGGER_ID, monitoring.PROFILER_ID):
            if monitoring.get_tool(tool) is not None:
                return f"{monitoring.get_tool(tool)} is attached (sys.monitoring)"
    argv = list(getattr(sys, "orig_argv", ()))
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] in _DEBUGGER_MODULES:
            return f"running under python -m {argv[i + 1]}"
    for name in _DEBUGGER_MODULES:
        if name != "pdb" and name in sys.modules:  # absl imports pdb anyway
            return f"{name} is loaded"
    return None


def _opted_out() -> bool:
    return os.environ.get(OPT_OUT, "").strip().lower() not in ("", "0", "false", "no")


def _forget_preload(path: str) -> None:
    """Take our `path` out of LD_PRELOAD (and the restart mark) in
    os.environ, so that subprocesses do not inherit it. This process keeps
    tcmalloc: the loader read LD_PRELOAD once, when it started."""
    os.environ.pop(REEXEC_MARK, None)
    entries = os.environ.get("LD_PRELOAD", "").split(":")
    if path in entries:
        entries.remove(path)
    kept = ":".join(e for e in entries if e)
    if kept:
        os.environ["LD_PRELOAD"] = kept
    else:
        os.environ.pop("LD_PRELOAD", None)


def reexec_with_tcmalloc(enabled: bool = True) -> str:
    """Restart this command with tcmalloc preloaded, if that would help.

    Returns (without restarting) a sentence saying which allocator runs and,
    where it is glibc, why there was no restart: the caller opted out
    (`enabled=False`, e.g. a --notcmalloc flag, or ASTROM3_NO_TCMALLOC=1),
    the run is for a GPU or TPU, a debugger is attached, this is the
    restarted process and the preload failed, or tcmalloc is not installed.
    Call it first thing in a command's main(), before JAX starts computing.
    The restarted process keeps the interpreter options and arguments
    (sys.orig_argv) and the environment, and drops our LD_PRELOAD entry from
    its environment as soon as it calls this function again.
    """
    ours = os.environ.get(REEXEC_MARK)
    if ours:
        _forget_preload(ours)
    current = allocator()
    if current != "glibc":
        return f"malloc: {current}"
    if ours:
        return "malloc: glibc (tcmalloc was preloaded but did not load)"
    if not enabled:
        return "malloc: glibc"
    if _opted_out():
        return f"malloc: glibc ({OPT_OUT} is set)"
    why_not = accelerator_hint() or debugger_hint()
    if why_not:
        return f"malloc: glibc (no tcmalloc restart: {why_not})"
    path = find_tcmalloc()
    if path is None:
        return f"malloc: glibc; XLA:CPU steps run faster if you {INSTALL_HINT}"
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (path, env.get("LD_PRELOAD")) if p)
    env[REEXEC_MARK] = path
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    raise AssertionError("unreachable: execve returns only by raising")


def warn_if_slow_allocator() -> None:
    """Warn when training on CPU under glibc malloc, which re-faults every
    step's buffers (about 1.4x slower than tcmalloc)."""
    import jax
    from absl import logging

    if jax.default_backend() == "cpu" and allocator() == "glibc":
        logging.warning(
            "Training on CPU under glibc malloc: steps run about 1.4x faster "
            "under tcmalloc; %s.",
            INSTALL_HINT,
        )
