"""One ordered process pool and one rule for its size.

The builder, a user's catalogue, predict and the synthetic release all map
one function over many rows in worker processes; they share this pool so
that order, start method, back-pressure and error reports are the same.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from astrom3_jax import errors

MAX_WORKERS = 8
POOL_MIN_ITEMS = 512


class WorkerFailure(errors.UserError, RuntimeError):
    """A worker died, or failed on an item in a way the work does not expect."""


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (what taskset, cpusets
    and batch schedulers grant), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def default_workers(n_items: int) -> int:
    """Worker processes for n_items: 0 (work in this process) for fewer than
    POOL_MIN_ITEMS items or on 2 usable CPUs or fewer; otherwise one per
    usable CPU (usable_cpus), at most MAX_WORKERS.

    Spawned workers take 1-2 s to start (numpy, astropy), about what 200
    catalogue rows with spectra or 1,000 without take in this process. On 2
    cores 2 workers were slower than one process (catalogue: 131 against 217
    objects/s; predict end to end: 57% against 72% of the bare model's
    samples/s; docs/benchmarks.md).
    """
    cpus = usable_cpus()
    if n_items < POOL_MIN_ITEMS or cpus <= 2:
        return 0
    return min(cpus, MAX_WORKERS)


# ---------------------------------------------------------------- the pool
class _ItemFailed(Exception):
    """Raised in a worker: item `index` of its chunk failed (picklable)."""

    def __init__(self, index: int, what: str):
        super().__init__(index, what)
        self.index, self.what = index, what


_STATE: dict = {}


def _init_worker(setup, setup_args) -> None:
    """Makes a worker's state; never raises.

    An initializer that raises makes a process pool restart the worker
    forever, so a failure is kept and raised by the worker's first chunk.
    """
    _STATE.clear()
    try:
        _STATE["state"] = setup(*setup_args) if setup is not None else None
    except Exception as e:  # reported by the first chunk, see above
        _STATE["init_error"] = e


def _run_chunk(fn, items) -> list:
    if "init_error" in _STATE:
        raise _STATE["init_error"]
    state = _STATE["state"]
    out = []
    for k, item in enumerate(items):
        try:
            out.append(fn(item, state))
        except Exception as e:  # named by the parent, which knows the items
            raise _ItemFailed(k, f"{type(e).__name__}: {e}") from e
    return out


def ordered_map(
    fn: Callable[[Any, Any], Any],
    items: Sequence,
    *,
    workers: int | None = None,
    setup: Callable[..., Any] | None = None,
    setup_args: tuple = (),
    name: Callable[[Any], str] = str,
    source: str = "",
    task: str = "pool",
    max_chunk: int = 32,
) -> Iterator:
    """Yields fn(item, state) for each item, in item order.

    state = setup(*setup_args) (None without setup), made once per worker
    (once here when serial; closed here afterwards if it has close()).
    workers <= 1 works in this process; otherwise a spawn-started pool (safe
    with JAX threads in the parent) takes chunks of up to max_chunk items,
    at most 4 per worker in flight. workers=None: default_workers(len(items)).
    An exception from fn, or a worker's death, raises WorkerFailure naming
    the item(s) (`name(item)` of `source`; `task`, e.g. 'parsing', names
    the worker);
    an exception from setup is raised as it is.
    """
    if workers is None:
        workers = default_workers(len(items))
    workers = min(workers, len(items))
    of = f" of {source}" if source else ""
    if workers <= 1:
        state = setup(*setup_args) if setup is not None else None
        try:
            for item in items:
                try:
                    result = fn(item, state)
                except Exception as e:
                    raise WorkerFailure(
                        f"{name(item)}{of}: unexpected {type(e).__name__}: {e}"
                    ) from e
                yield result
        finally:
            close = getattr(state, "close", None)
            if close is not None:
                close()
        return
    yield from _pooled(fn, items, workers, setup, setup_args, name, of, task, max_chunk)


def _pooled(fn, items, workers, setup, setup_args, name, of, task, max_chunk):
    size = max(1, min(max_chunk, len(items) // (8 * workers)))
    chunks = iter([items[i : i + size] for i in range(0, len(items), size)])
    pool = cf.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(setup, setup_args),
    )
    pending = collections.deque()  # bounded: results cannot pile up in memory

    refused = []  # (chunk, error) once a broken pool refuses a chunk

    def submit():
        chunk = None if refused else next(chunks, None)
        if chunk is None:
            return
        try:
            pending.append((chunk, pool.submit(_run_chunk, fn, chunk)))
        except cf.process.BrokenProcessPool as e:
            # A worker died between two results. If it died working, its
            # chunk is pending and its future names the items; if it died
            # idle, nothing pending fails, and the refusal is raised below.
            refused.append((chunk, e))

    try:
        for _ in range(4 * workers):
            submit()
        while pending:
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except cf.process.BrokenProcessPool as e:
                raise WorkerFailure(
                    f"a {task} worker process died (killed, out of memory or "
                    f"crashed) while working on {name(chunk[0])} to "
                    f"{name(chunk[-1])}{of}: {e}"
                ) from None
            except _ItemFailed as e:
                raise WorkerFailure(
                    f"{name(chunk[e.index])}{of}: unexpected {e.what}"
                ) from e
            submit()
            yield from results
        if refused:
            chunk, e = refused[0]
            raise WorkerFailure(
                f"a {task} worker process died (killed, out of memory or "
                f"crashed) before {name(chunk[0])} to {name(chunk[-1])}{of} "
                f"could start: {e}"
            )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
