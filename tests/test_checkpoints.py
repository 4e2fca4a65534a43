"""Workdirs: config checks, latest + best retention, model save/restore,
and the faults: damaged files, NaN parameters, a save that cannot write."""

import contextlib
import glob
import os
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from astrom3_jax import errors
from astrom3_jax.training import checkpoints
from astrom3_jax.training import workdir as workdir_lib


class TinyModel(nnx.Module):
    """Stand-in with the AstroM3 surface: embeddings + per-pair scales."""

    def __init__(self, cfg, rngs):
        self.enc = nnx.Dict(
            {m: nnx.Linear(cfg.dim, 4, rngs=rngs) for m in cfg.modalities}
        )
        self.scale = nnx.Param(jnp.full((), np.log(100.0)))
        self.table = nnx.Variable(jnp.arange(3.0))  # non-Param state survives

    def __call__(self, batch, *, rngs=None):
        return {m: self.enc[m](batch[m]) for m in self.enc}


def tiny_build(model_cfg, rngs):
    return TinyModel(model_cfg, rngs)


def _config(**kw):
    cfg = ml_collections.ConfigDict()
    cfg.model = ml_collections.ConfigDict({"dim": 3, "modalities": ("a", "b")})
    cfg.batch_size = 8
    cfg.update(kw)
    return cfg


def test_config_roundtrip_and_mismatch(tmp_path):
    wd = str(tmp_path)
    checkpoints.save_or_check_config(wd, _config())
    checkpoints.save_or_check_config(wd, _config())  # same: fine
    assert checkpoints.load_config(wd).model.modalities == ("a", "b")
    with pytest.raises(ValueError, match="batch_size: workdir has 8, now 16"):
        checkpoints.save_or_check_config(wd, _config(batch_size=16))


def test_save_model_only_then_restore(tmp_path):
    wd = str(tmp_path)
    cfg = _config()
    model = tiny_build(cfg.model, nnx.Rngs(7))
    workdir_lib.save_model_only(wd, model, cfg)
    restored, cfg2 = workdir_lib.restore_model(wd, build_fn=tiny_build)
    assert cfg2 == cfg
    want = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    got = nnx.to_pure_dict(nnx.state(restored, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, got, want)
    np.testing.assert_array_equal(restored.table[...], np.arange(3.0))


@pytest.mark.parametrize(
    ("given", "want"),
    [(None, None), ("best", "best"), ("Latest", "latest"), ("12", 12), (7, 7)],
)
def test_parse_step(given, want):
    assert checkpoints.parse_step(given) == want


@pytest.mark.parametrize("bad", ["bets", "-1", "1.5", "", True])
def test_parse_step_names_a_bad_step(bad):
    with pytest.raises(errors.ConfigError, match=r"'best', 'latest' or a step"):
        checkpoints.parse_step(bad)


def test_keeps_latest_and_best(tmp_path):
    wd = str(tmp_path)
    cfg = _config()
    checkpoints.save_or_check_config(wd, cfg)
    model = tiny_build(cfg.model, nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    accs = [0.1, 0.5, 0.3, 0.2, 0.25]
    with checkpoints.make_manager(wd) as mgr:
        for step, acc in enumerate(accs, start=1):
            p = jax.tree.map(lambda x, s=step: x * 0 + s, params)
            checkpoints.save(
                mgr,
                step,
                params=p,
                meta={"epoch": step},
                metrics={checkpoints.BEST_METRIC: acc},
            )
        # A mid-epoch checkpoint without metrics becomes the latest.
        checkpoints.save(mgr, 6, params=params, meta={"epoch": 5})
        mgr.wait_until_finished()
        assert sorted(mgr.all_steps()) == [2, 6]
        assert checkpoints.resolve_step(mgr, "best") == 2
        assert checkpoints.resolve_step(mgr, "latest") == 6
        # As flags and config fields write them: strings, any case, spaces.
        assert checkpoints.resolve_step(mgr, " Best ") == 2
        assert checkpoints.resolve_step(mgr, "LATEST") == 6
        assert checkpoints.resolve_step(mgr, "6") == 6
        assert checkpoints.resolve_step(mgr, None) == 2
    best, _ = workdir_lib.restore_model(wd, "best", build_fn=tiny_build)
    np.testing.assert_array_equal(best.scale[...], 2.0)
    latest, _ = workdir_lib.restore_model(wd, "latest", build_fn=tiny_build)
    np.testing.assert_allclose(latest.scale[...], np.log(100.0))


# ------------------------------------------------------------------ faults


def _big_config():
    """Kernels of 512 x 4 random floats: each array has its own data file."""
    return _config(model=ml_collections.ConfigDict({"dim": 512, "modalities": ("a",)}))


def _save_steps(wd, accs):
    """Checkpoints 1..n with distinct random parameters; returns them."""
    cfg = _big_config()
    checkpoints.save_or_check_config(wd, cfg)
    saved = {}
    with checkpoints.make_manager(wd) as mgr:
        for step, acc in enumerate(accs, start=1):
            model = tiny_build(cfg.model, nnx.Rngs(step))
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            checkpoints.save(
                mgr, step, params=params, meta={"epoch": step},
                metrics=None if acc is None else {checkpoints.BEST_METRIC: acc},
            )  # fmt: skip
            saved[step] = jax.device_get(params)
        mgr.wait_until_finished()
    return saved


def _data_file(wd, step):
    files = glob.glob(f"{wd}/checkpoints/{step}/params/ocdbt.process_*/d/*")
    return max(files, key=os.path.getsize)


def _restored(model):
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _flip_inside(wd, item, array):
    """Flip one bit inside the stored bytes of `array`. Random int32 data
    does not compress, so zstd stores it raw and its bytes can be found."""
    raw = np.ascontiguousarray(array).tobytes()
    window = raw[len(raw) // 2 : len(raw) // 2 + 32]
    for path in glob.glob(f"{wd}/checkpoints/1/{item}/ocdbt.process_*/d/*"):
        data = bytearray(open(path, "rb").read())
        at = data.find(window)
        if at >= 0:
            data[at + 16] ^= 0x01
            open(path, "wb").write(data)
            return
    raise AssertionError(f"the bytes of the {item} array are not stored raw")


@pytest.mark.parametrize(
    "item, what", [("params", "parameters"), ("train", "optimiser state")]
)
def test_one_flipped_bit_is_caught_by_the_checksum(tmp_path, item, what):
    wd = str(tmp_path)
    rng = np.random.default_rng(0)
    trees = {
        "params": {"w": rng.integers(-(2**31), 2**31 - 1, (512, 4), np.int32)},
        "train": {"mu": rng.integers(-(2**31), 2**31 - 1, (256, 8), np.int32)},
    }
    with checkpoints.make_manager(wd) as mgr:
        checkpoints.save(
            mgr, 1, params=trees["params"], train_state=trees["train"], meta={}
        )
        mgr.wait_until_finished()
    _flip_inside(wd, item, next(iter(trees[item].values())))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = {
        k: jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), v
        )
        for k, v in trees.items()
    }
    with checkpoints.make_manager(wd) as mgr:
        with pytest.raises(
            checkpoints.CorruptCheckpointError,
            match=f"checkpoint 1 in .*: the {what} do not match the checksum",
        ):
            checkpoints.restore(
                mgr,
                1,
                abstract_params=shapes["params"],
                abstract_train_state=shapes["train"],
            )


@pytest.mark.parametrize("how", ["truncate", "delete", "meta"])
def test_restore_model_skips_a_damaged_best_checkpoint(tmp_path, capsys, how):
    wd = str(tmp_path)
    saved = _save_steps(wd, [0.1, 0.9, None])  # best 2, latest 3; 1 is neither: deleted
    if how == "truncate":
        path = _data_file(wd, 2)
        open(path, "r+b").truncate(os.path.getsize(path) // 2)
    elif how == "delete":
        os.remove(_data_file(wd, 2))
    else:  # the meta JSON (with the checksums) is gone
        os.remove(f"{wd}/checkpoints/2/meta/metadata")
    with pytest.raises(checkpoints.CorruptCheckpointError, match="checkpoint 2 in"):
        workdir_lib.restore_model(wd, "best", build_fn=tiny_build)
    capsys.readouterr()
    model, _ = workdir_lib.restore_model(wd, build_fn=tiny_build)
    jax.tree.map(np.testing.assert_array_equal, _restored(model), saved[3])
    out = capsys.readouterr().out
    assert f"warning: skipping checkpoint 2: checkpoint 2 in {wd}/checkpoints" in out
    assert f"moved it aside to {wd}/checkpoints/2.corrupt" in out
    # One readable reason, not TensorStore's page of JSON spec.
    assert "tensorstore_spec" not in out and len(out.splitlines()[0]) < 1000
    assert sorted(os.listdir(f"{wd}/checkpoints")) == ["2.corrupt", "3"]


def test_moving_aside_never_overwrites_an_earlier_corrupt_copy(tmp_path):
    wd = str(tmp_path)
    _save_steps(wd, [0.5])
    os.makedirs(f"{wd}/checkpoints/1.corrupt")
    os.remove(_data_file(wd, 1))
    with pytest.raises(checkpoints.CorruptCheckpointError, match="no checkpoint"):
        workdir_lib.restore_model(wd, build_fn=tiny_build)
    assert sorted(os.listdir(f"{wd}/checkpoints")) == ["1.corrupt", "1.corrupt.1"]


def test_save_refuses_nonfinite_parameters(tmp_path):
    wd = str(tmp_path)
    params = {"a": np.ones(3, np.float32), "b": {"w": np.array([1.0, np.inf])}}
    with checkpoints.make_manager(wd) as mgr:
        with pytest.raises(
            errors.NonFiniteError, match=r"1 parameter arrays .*\['b'\]"
        ):
            checkpoints.save(mgr, 1, params=params)
        mgr.wait_until_finished()
        assert mgr.all_steps() == []


def _new_threads(before):
    """Non-daemon threads started since `before` still alive after 3 s."""
    deadline = time.time() + 3
    while time.time() < deadline:
        alive = [t for t in threading.enumerate() if t not in before and not t.daemon]
        if not alive:
            return []
        time.sleep(0.1)
    return [t.name for t in alive]


def test_failed_step_directory_raises_and_strands_no_thread(tmp_path):
    """Orbax once made step directories in a background thread; when that
    failed, its writer threads waited 300 s for a signal and the process
    could not exit."""
    wd = str(tmp_path)
    open(f"{wd}/checkpoints", "w").write("a file where the folder should be")
    before = set(threading.enumerate())
    t0 = time.time()
    mgr = checkpoints.make_manager(wd)
    with pytest.raises(OSError, match="Not a directory"):
        checkpoints.save(mgr, 1, params={"w": np.ones(3, np.float32)})
        mgr.wait_until_finished()
    mgr.close()
    assert time.time() - t0 < 30
    assert _new_threads(before) == []


def test_disk_full_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC in Orbax's background writer surfaces at the wait, promptly."""
    import errno

    from etils import epath

    wd = str(tmp_path)
    saved = _save_steps(wd, [0.5])
    real_write = epath.Path.write_text

    def disk_full(self, *args, **kwargs):
        if ".orbax-checkpoint-tmp" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    before = set(threading.enumerate())
    t0 = time.time()
    mgr = checkpoints.make_manager(wd)
    monkeypatch.setattr(epath.Path, "write_text", disk_full)
    with checkpoints.quiet_orbax_leftovers():
        with pytest.raises(OSError, match="No space left on device"):
            checkpoints.save(mgr, 2, params=saved[1], meta={"epoch": 2})
            mgr.wait_until_finished()
        monkeypatch.undo()
        with contextlib.suppress(OSError):  # Orbax reports it again on close
            checkpoints.close_manager(mgr)
    assert time.time() - t0 < 30
    assert _new_threads(before) == []
    model, _ = workdir_lib.restore_model(wd, build_fn=tiny_build)
    jax.tree.map(np.testing.assert_array_equal, _restored(model), saved[1])


def test_unwritable_checkpoint_folder_is_found_before_training(tmp_path):
    wd = str(tmp_path)
    open(f"{wd}/checkpoints", "w").write("a file where the folder should be")
    with pytest.raises(errors.CheckpointSaveError, match="it is a file, not a folder"):
        checkpoints.check_can_save(wd)
    os.remove(f"{wd}/checkpoints")
    checkpoints.check_can_save(wd)  # creates the folder, leaves nothing in it
    assert os.listdir(f"{wd}/checkpoints") == []


def test_config_check_reads_only(tmp_path):
    wd = str(tmp_path)
    checkpoints.check_config(wd, _config())  # no workdir yet: fine, writes nothing
    assert not os.path.exists(f"{wd}/config.json")
    checkpoints.save_or_check_config(wd, _config())
    with pytest.raises(errors.ConfigError, match="batch_size: workdir has 8, now 4"):
        checkpoints.check_config(wd, _config(batch_size=4))
