"""Workdirs: config checks, latest + best retention, model save/restore."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from astrom3_jax import checkpoints


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
    checkpoints.save_model_only(wd, model, cfg)
    restored, cfg2 = checkpoints.restore_model(wd, build_fn=tiny_build)
    assert cfg2 == cfg
    want = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    got = nnx.to_pure_dict(nnx.state(restored, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, got, want)
    np.testing.assert_array_equal(restored.table[...], np.arange(3.0))


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
    best, _ = checkpoints.restore_model(wd, "best", build_fn=tiny_build)
    np.testing.assert_array_equal(best.scale[...], 2.0)
    latest, _ = checkpoints.restore_model(wd, "latest", build_fn=tiny_build)
    np.testing.assert_allclose(latest.scale[...], np.log(100.0))
