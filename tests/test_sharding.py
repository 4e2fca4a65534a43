"""Mesh helpers, and the global-batch loss across 2 processes x 2 devices.

The multi-process test starts two Python processes on localhost that join
with `jax.distributed.initialize` (gloo CPU collectives), feed only their
own rows through `make_array_from_process_local_data`, and must reproduce
the single-device loss and gradients of the whole batch.
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from astrom3_jax.training import sharding
from tests.helpers.losses import MODS, random_embeddings, reference_loss

WORKER = textwrap.dedent(
    """
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import itertools
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid
    )
    from astrom3_jax.training import losses, sharding
    mods = ("photometry", "spectra", "metadata")
    pairs = list(itertools.combinations(mods, 2))
    data = dict(np.load(out + ".in.npz"))
    raw = jnp.asarray(data.pop("raw"))
    mesh = sharding.make_mesh()
    assert mesh.size == 4 and jax.process_count() == 2
    n = len(data[mods[0]]) // 2
    local = {m: v[pid * n:(pid + 1) * n] for m, v in data.items()}
    emb = sharding.shard_batch(local, mesh)

    def per_device(emb, raw):
        def fn(e, r):
            scales = {p: jnp.clip(jnp.exp(r[i]), 1, 100) for i, p in enumerate(pairs)}
            return losses.clip_loss(e, scales, axis_name="data")
        return jax.value_and_grad(fn, (0, 1))(emb, raw)

    f = sharding.data_parallel(
        per_device, mesh,
        in_specs=({m: P("data") for m in mods}, P()),
        out_specs=(P(), ({m: P("data") for m in mods}, P())),
    )
    loss, (g_emb, g_raw) = jax.jit(f)(emb, sharding.replicate(raw, mesh))
    res = {"loss": sharding.to_host(loss), "g_raw": sharding.to_host(g_raw)}
    res.update({m: sharding.to_host(g) for m, g in g_emb.items()})
    if pid == 0:
        np.savez(out, **res)
    jax.distributed.shutdown()
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_two_devices_match_one_device(tmp_path):
    emb = random_embeddings(16, d=8, seed=11)
    raw = np.array([np.log(100.0), 1.5, 3.0], np.float32)
    out = str(tmp_path / "result.npz")
    np.savez(out + ".in.npz", raw=raw, **emb)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(pid), out],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for pid in (0, 1)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0].decode())
        except subprocess.TimeoutExpired:
            p.kill()
            logs.append(p.communicate()[0].decode())
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    got = np.load(out)
    want, (g_emb, g_raw) = jax.value_and_grad(reference_loss, (0, 1))(
        {k: jnp.asarray(v) for k, v in emb.items()}, jnp.asarray(raw)
    )
    np.testing.assert_allclose(got["loss"], want, rtol=1e-6)
    np.testing.assert_allclose(got["g_raw"], g_raw, rtol=1e-5, atol=1e-5)
    for m in MODS:
        np.testing.assert_allclose(got[m], g_emb[m], rtol=1e-5, atol=1e-5)


def test_batch_size_must_divide_devices():
    mesh = sharding.make_mesh(8)
    assert sharding.check_batch_size(64, mesh) == 64 // jax.process_count()
    with pytest.raises(ValueError, match="does not divide"):
        sharding.check_batch_size(60, mesh)


def test_shard_batch_splits_rows_over_devices():
    mesh = sharding.make_mesh(8)
    batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}
    arr = sharding.shard_batch(batch, mesh)["x"]
    assert len(arr.addressable_shards) == 8
    assert all(s.data.shape == (2, 3) for s in arr.addressable_shards)
    np.testing.assert_array_equal(sharding.to_host(arr), batch["x"])
