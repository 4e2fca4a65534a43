"""The one ordered worker pool (astrom3_jax.data.workers): item order, serial
and pooled results alike, errors that name the item, the worker-count rule."""

import concurrent.futures as cf
import os
import time

import pytest

from astrom3_jax.data import workers

# Module-level so that spawned workers can unpickle them.


def _slow_square(item, state):
    time.sleep(0.002 * ((item * 7) % 11))  # later items often finish first
    return item * item + (state or 0)


def _offset(base, step):
    return base + step


def _fails_on_13(item, state):
    if item == 13:
        raise ValueError(f"boom {item}")
    return item


def _no_setup():
    raise OSError("setup failed: no archive")


def _dies_on_5(item, state):
    if item == 5:
        os._exit(3)
    return item


def _name(item):
    return f"item {item}"


def test_order_is_kept_with_two_workers():
    items = list(range(20))
    got = list(workers.ordered_map(_slow_square, items, workers=2, max_chunk=1))
    assert got == [i * i for i in items]


def test_serial_and_pooled_give_the_same_results():
    items = list(range(40))
    kw = dict(setup=_offset, setup_args=(100, 1))
    serial = list(workers.ordered_map(_slow_square, items, workers=0, **kw))
    one = list(workers.ordered_map(_slow_square, items, workers=1, **kw))
    pooled = list(workers.ordered_map(_slow_square, items, workers=2, **kw))
    assert serial == one == pooled == [i * i + 101 for i in items]


@pytest.mark.parametrize("n_workers", [0, 2])
def test_an_error_is_raised_naming_the_item(n_workers):
    items = list(range(20))
    it = workers.ordered_map(
        _fails_on_13, items, workers=n_workers, name=_name, source="the list"
    )
    got = []
    with pytest.raises(workers.WorkerFailure) as err:
        for x in it:
            got.append(x)
    assert str(err.value) == "item 13 of the list: unexpected ValueError: boom 13"
    assert got == list(range(13))


@pytest.mark.parametrize("n_workers", [0, 2])
def test_a_setup_error_is_raised_as_it_is(n_workers):
    it = workers.ordered_map(_slow_square, range(8), workers=n_workers, setup=_no_setup)
    with pytest.raises(OSError, match="setup failed: no archive"):
        list(it)


def test_a_dead_worker_ends_the_map_naming_its_items():
    it = workers.ordered_map(
        _dies_on_5, list(range(12)), workers=2, name=_name, task="test", max_chunk=1
    )
    with pytest.raises(workers.WorkerFailure, match="a test worker process died"):
        list(it)


def test_a_pool_broken_between_results_loses_nothing_silently(monkeypatch):
    """A worker that dies idle breaks the pool without failing any pending
    chunk; the next submission is refused. The map still yields every
    result it has, in order, then names the first item that never ran
    (before, the refusal escaped as a bare BrokenProcessPool)."""
    real_submit = cf.ProcessPoolExecutor.submit
    calls = []

    def refuse_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise cf.process.BrokenProcessPool("a child process terminated")
        return real_submit(self, *args, **kwargs)

    monkeypatch.setattr(cf.ProcessPoolExecutor, "submit", refuse_the_third)
    it = workers.ordered_map(
        _slow_square, list(range(12)), workers=2, name=_name, task="test", max_chunk=1
    )
    got = []
    with pytest.raises(workers.WorkerFailure, match="died .* before item 2 to item 2"):
        for value in it:
            got.append(value)
    assert got == [0, 1]


def test_closing_early_shuts_the_pool_down():
    it = workers.ordered_map(_slow_square, list(range(400)), workers=2, max_chunk=1)
    start = time.monotonic()
    assert next(it) == 0
    it.close()
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    "cpus,n_items,expected",
    [
        (1, 10_000, 0),
        (2, 10_000, 0),  # 2 CPUs or fewer: no pool
        (3, 10_000, 3),
        (4, 511, 0),  # too few items to pay for spawning
        (4, 512, 4),
        (8, 100_000, 8),
        (64, 100_000, 8),  # at most MAX_WORKERS
    ],
)
def test_default_workers_rule(monkeypatch, cpus, n_items, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: 999)  # the affinity mask wins
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert workers.usable_cpus() == cpus
    assert workers.default_workers(n_items) == expected


def test_usable_cpus_without_an_affinity_mask(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert workers.usable_cpus() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert workers.usable_cpus() == 1
