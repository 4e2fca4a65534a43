"""Ahead-of-time TPU plans (astrom3_jax/training/planner/, python -m astrom3_jax.plan).

The compile tests need libtpu (`pip install -e '.[tpu]'`, which .ci/run
installs before running this file again); without it they skip. They
compile the smoke model for a 4-chip v5e slice (a few seconds).
"""

import importlib.util
import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from astrom3_jax.configs import finetune, pretrain
from astrom3_jax.training import planner
from astrom3_jax.training.planner import topologies
from tests.helpers.paths import ROOT

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu not installed (pip install -e '.[tpu]')",
)


def smoke_param_count(c) -> int:
    """Parameters of the smoke CLIP model, layer by layer, from its config."""
    m = c.model
    p, s, md = m.photometry, m.spectra, m.metadata
    d, ff = p.d_model, p.d_ff
    linear = lambda a, b: a * b + b  # noqa: E731
    layer = 4 * linear(d, d) + linear(d, ff) + linear(ff, d) + 2 * 2 * d
    photometry = 3 * p.in_channels * d + p.n_layers * layer + 2 * d
    ch, k = s.conv_channels, s.kernel_size
    spectra = sum(k * a * b + b for a, b in zip(ch[:-1], ch[1:], strict=True))
    n = s.length
    for i in range(len(ch) - 1):
        n = n - k + 1
        if i < len(ch) - 2:
            n //= s.pool_size
    metadata = linear(md.input_dim, md.hidden_dim) + linear(
        md.hidden_dim, md.hidden_dim
    )
    e = m.embed_dim
    projections = (
        linear(c.seq_len * d, e) + linear(ch[-1] * n, e) + linear(md.hidden_dim, e)
    )
    return photometry + spectra + metadata + projections + 3  # 3 temperatures


def row_bytes(c) -> int:
    """float32 photometry + mask, spectrum, metadata; int32 label; float32 mask."""
    m = c.model
    per_row = c.seq_len * m.photometry.in_channels + c.seq_len
    per_row += m.spectra.conv_channels[0] * m.spectra.length + m.metadata.input_dim
    return 4 * per_row + 4 + 4


def tiled_bytes(shape, dtype, layout) -> int:
    """Bytes of an array stored in a TPU tiled layout: the minor dimensions
    (in the layout's order) rounded up to the tile."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        shape, dtype = (*shape, 2), np.uint32  # threefry: two uint32 words
    dims = [shape[i] for i in layout.major_to_minor]
    tile = layout.tiling[0] if layout.tiling else ()
    dims = [1] * (len(tile) - len(dims)) + dims
    for j, t in enumerate(tile):
        i = len(dims) - len(tile) + j
        dims[i] = -(-dims[i] // t) * t
    return math.prod(dims) * np.dtype(dtype).itemsize


def test_missing_libtpu_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "libtpu" else real(name, *a),
    )
    with pytest.raises(planner.MissingLibtpuError, match=r"pip install -e '\.\[tpu\]'"):
        planner.topology_devices("v5e-8")


def test_release_split_sizes():
    assert planner.split_sizes_of("full_42") == dict(
        train=17063, validation=2152, test=2225
    )
    assert planner.split_sizes_of("sub10_0")["train"] == 1660
    assert planner.split_sizes_of("synthetic_small") is None


@needs_libtpu
@pytest.mark.parametrize(
    "name, devices, kind, hosts",
    [
        ("v2-8", 8, "TPU v2", 1),
        ("v5e-1", 1, "TPU v5 lite", 1),
        ("v5e-8", 8, "TPU v5 lite", 1),
        ("v6e-1", 1, "TPU v6 lite", 1),
        ("v6e-8", 8, "TPU v6 lite", 1),
        ("v5e-256", 256, "TPU v5 lite", 64),
    ],
)
def test_topologies(name, devices, kind, hosts):
    got = planner.topology_devices(name)
    hw = planner.hardware(got)
    assert (len(got), got[0].device_kind, hw.hosts) == (devices, kind, hosts)
    if name == "v2-8":  # two TensorCores per chip, each a device
        assert hw.devices_per_chip == 2
        assert hw.hbm_bytes == 8 * 2**30 and hw.peak_flops == 23e12


@needs_libtpu
def test_smoke_train_step_argument_bytes():
    c = pretrain.get_config("smoke")
    p = planner.plan(c, "v5e:2x2", steps=("train",))  # 4 chips, 4 rows each
    train = p.steps["train"]
    n_dev, rows = 4, c.batch_size // 4
    n_params = smoke_param_count(c)
    # The per-device arguments before the TPU's tiling: parameters, Adam's
    # two moments and count, the step, the batch shard, learning rate, key.
    # (`rest`, the modules' rng state, is not read by the step: pruned.)
    state, frozen, rest, batch, lr, key = train.args
    raw = sum(
        math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
        for x in jax.tree.leaves((state, batch, lr))
    )
    assert raw == 4 * n_params + (8 * n_params + 4) + 4 + rows * row_bytes(c) + 4
    assert jax.tree.leaves(frozen) == []
    # The compiler's argument bytes: the same arrays in their tiled layouts.
    # Arguments the step never reads are pruned (no layout): the modules' rng
    # state, and the batch's label and row mask (the CLIP loss reads neither).
    formats = jax.tree.leaves(train.compiled.input_formats)
    leaves = jax.tree.leaves_with_path(train.args)
    used = [
        (x, f.layout) for (_, x), f in zip(leaves, formats, strict=True) if f.layout
    ]
    pruned = [
        jax.tree_util.keystr(k)
        for (k, _), f in zip(leaves, formats, strict=True)
        if not f.layout
    ]
    from_batch = sorted(k for k in pruned if k.startswith("[3]"))
    assert from_batch == ["[3]['label']", "[3]['mask']"]
    assert len(pruned) - 2 == len(jax.tree.leaves(rest))
    expect = sum(
        tiled_bytes(x.sharding.shard_shape(x.shape), x.dtype, lay) for x, lay in used
    )
    assert train.memory["argument"] == expect
    # Donated state comes back as outputs in the same buffers.
    assert train.memory["alias"] > 4 * n_params
    assert p.hardware.devices == n_dev and train.global_batch == 16
    # The roofline is the slower of compute and memory.
    hw = p.hardware
    assert train.est_step_s == max(
        train.flops / hw.peak_flops, train.bytes / hw.hbm_bandwidth
    )
    assert train.est_samples_per_s == pytest.approx(16 / train.est_step_s)


@needs_libtpu
def test_plan_command_json(tmp_path):
    out = tmp_path / "plan.json"
    cmd = [
        sys.executable,
        "-m",
        "astrom3_jax.plan",
        "--config",
        "configs/finetune.py:meta,sub10,smoke",
        "--topology",
        "v5e-1",
        f"--json={out}",
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "train step: global batch 16" in p.stdout
    got = json.loads(out.read_text())
    for key in (
        "topology",
        "devices",
        "global_batch",
        "dtype",
        "memory_per_device_bytes",
        "hbm_per_device_bytes",
        "flops_per_step",
        "bytes_per_step",
        "est_step_s",
        "est_samples_per_s",
        "train",
        "eval",
        "export",
    ):
        assert key in got, key
    assert set(got["memory_per_device_bytes"]) == {"argument", "temp", "output", "peak"}
    assert got["topology"] == "v5e-1" and got["devices"] == 1
    assert got["hbm_per_device_bytes"] == 16 * 2**30
    assert (
        got["eval"]["global_batch"]
        == finetune.get_config("meta,sub10,smoke").eval_batch_size
    )
    assert got["export"]["global_batch"] == 256
    # Wall time of the whole run is only given for known data set sizes.
    assert "run" not in got


@needs_libtpu
def test_multi_host_slice_compiles_global_batch_loss():
    c = pretrain.get_config("smoke")
    p = planner.plan(c, "v5e-256", global_batch=512, steps=("train",))
    assert p.hardware.hosts == 64 and p.per_host_batch == 8
    text = p.steps["train"].compiled.as_text()
    # Each device holds 2 rows, and the loss sees the other modality's
    # embeddings of all 512 (smoke embed_dim 16), gathered across the slice.
    assert "f32[2,16]" in text and "f32[512,16]" in text


@pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed"
)
def test_plan_without_libtpu_is_one_line():
    """The command line's error where libtpu is missing."""
    cmd = [
        sys.executable,
        "-m",
        "astrom3_jax.plan",
        "--config",
        "configs/pretrain.py:smoke",
        "--topology",
        "v5e-8",
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert p.stderr.startswith("error: planning for a TPU needs libtpu")
    assert "pip install -e '.[tpu]'" in p.stderr


# ------------------------------------- the accelerator (bfloat16) path
# The bfloat16 step swaps gathers and scatters for one-hot matmuls and
# writes some backward passes out; float32 keeps the CPU path (bit for bit:
# tests/test_train.py). Each is checked against the float32 computation.


def test_bfloat16_probsparse_attention_matches_float32():
    from flax import nnx

    from astrom3_jax.models.attention import SelfAttention

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50, 32)).astype(np.float32)
    mask = np.ones((3, 50), np.float32)
    for reference_reshape in (True, False):
        made = {}
        for dtype in (jnp_dtype("float32"), jnp_dtype("bfloat16")):
            made[dtype] = SelfAttention(
                32,
                4,
                reference_reshape=reference_reshape,
                dtype=dtype,
                rngs=nnx.Rngs(0, sample=1),
            )
        m32, m16 = made.values()
        nnx.update(m16, nnx.state(m32, nnx.Param))

        def loss(m, x):
            y = m(x, mask, rngs=nnx.Rngs(sample=7)).astype(np.float32)
            return (y**2).sum(), y

        (_, y32), g32 = nnx.value_and_grad(loss, has_aux=True)(m32, x)
        (_, y16), g16 = nnx.value_and_grad(loss, has_aux=True)(
            m16, x.astype("bfloat16")
        )
        scale = float(np.abs(y32).max())
        np.testing.assert_allclose(y16, y32, atol=0.02 * scale)
        for name in ("query", "key", "value", "out"):
            a = np.asarray(getattr(g32, name).kernel[...])
            b = np.asarray(getattr(g16, name).kernel[...])
            np.testing.assert_allclose(b, a, atol=0.03 * np.abs(a).max())


def jnp_dtype(name):
    import jax.numpy as jnp

    return jnp.dtype(name)


def test_sparsity_from_scores_equals_the_gathered_one():
    from astrom3_jax.models.attention import _sparsity, _sparsity_from_scores

    rng = np.random.default_rng(1)
    q, k = (rng.normal(size=(2, 50, 4, 8)).astype(np.float32) for _ in range(2))
    key = jax.random.key(3)
    np.testing.assert_allclose(
        _sparsity_from_scores(q, k, key, 4), _sparsity(q, k, key, 4), atol=1e-5
    )


def test_low_precision_layer_norm_gradients():
    """The closed-form backward against autodiff of the textbook formula."""
    from astrom3_jax.models.layers import low_precision_layer_norm

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(8, 5, 16)) * 3 + 1).astype("bfloat16")
    scale, bias = (rng.normal(size=16).astype(np.float32) for _ in range(2))
    g = rng.normal(size=(8, 5, 16)).astype(np.float32)

    def textbook(x, scale, bias):
        x = x.astype(np.float32)
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jax.numpy.sqrt(var + 1e-5) * scale + bias

    want = jax.vjp(textbook, x, scale, bias)[1](g)
    got = jax.vjp(lambda *a: low_precision_layer_norm(*a, 1e-5), x, scale, bias)[1](
        g.astype("bfloat16")
    )
    np.testing.assert_allclose(np.float32(got[0]), want[0], atol=0.02)
    np.testing.assert_allclose(got[1], want[1], rtol=0.01, atol=0.05)
    np.testing.assert_allclose(got[2], want[2], rtol=0.01, atol=0.05)


def test_bfloat16_max_pool_gradient_is_the_float32_one():
    from astrom3_jax.models.spectra import max_pool

    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (2, 23, 5)).astype(np.float32)  # many ties
    g = rng.normal(size=(2, 5, 5)).astype(np.float32)
    f32 = jax.vjp(lambda v: max_pool(v, 4), x)[1](g)[0]
    b16 = jax.vjp(lambda v: max_pool(v, 4), x.astype("bfloat16"))[1](
        g.astype("bfloat16")
    )[0]
    np.testing.assert_array_equal(np.asarray(f32.astype("bfloat16")), np.asarray(b16))


def test_low_precision_layer_norm_parameter_gradient_sums_over_devices():
    from jax.sharding import PartitionSpec as P

    from astrom3_jax.models.layers import low_precision_layer_norm
    from astrom3_jax.training import sharding

    mesh = sharding.make_mesh(4)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 5, 16)).astype("bfloat16")
    params = tuple(rng.normal(size=16).astype(np.float32) for _ in range(2))

    def loss(p, x):
        y = low_precision_layer_norm(x, p[0], p[1], 1e-5).astype(np.float32)
        return (y**2).sum()

    def per_device(p, x):
        return jax.grad(lambda p: jax.lax.psum(loss(p, x), sharding.AXIS))(p)

    step = jax.jit(
        jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P(sharding.AXIS)), out_specs=P()
        )
    )
    with jax.set_mesh(mesh):
        got = step(
            sharding.replicate(params, mesh),
            jax.device_put(x, sharding.data_sharding(mesh)),
        )
    want = jax.grad(loss)(params, x)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------- GPUs


def test_gpu_plan_without_the_cuda_plugin_says_what_to_install(monkeypatch):
    monkeypatch.setattr(topologies, "cuda_plugin_installed", lambda: False)
    with pytest.raises(planner.MissingLibtpuError, match="jax-cuda12-pjrt"):
        planner.topology_devices("h100-8")


def test_kernel_bytes_adds_each_kernels_operands_and_result():
    hlo = "\n".join(
        [
            "HloModule m",
            "ENTRY %main (p: f32[4,8]) -> f32[4] {",
            "  %p = f32[4,8]{1,0} parameter(0)",
            "  %b = bf16[4,8]{1,0} convert(%p)",
            "  ROOT %r = f32[4]{0} reduce(%b, %c), dimensions={1}",
            "  %c = f32[] constant(0)",
            "}",
        ]
    )
    # convert: reads 128 B, writes 64 B; reduce: reads 64 B (+ the constant,
    # defined later, unknown: 0), writes 16 B.
    assert planner.kernel_bytes(hlo) == 128 + 64 + 64 + 16


@pytest.mark.skipif(
    not planner.cuda_plugin_installed(), reason="JAX's CUDA plugin not installed"
)
def test_h100_plan_of_the_smoke_model():
    p = planner.plan(pretrain.get_config("smoke"), "h100-8", steps=("train",))
    train = p.steps["train"]
    assert p.hardware.devices == 8 and p.hardware.chip.name == "H100 SXM"
    assert train.flops == 0 and train.bytes > 0
    assert train.est_step_s == train.bytes / 3.35e12


class _FakePlan:
    """What find_max_batch reads of a Plan: the train step's peak and the HBM."""

    def __init__(self, peak, hbm):
        self.steps = {"train": type("S", (), {"memory": {"peak": peak}})()}
        self.hardware = type("H", (), {"hbm_bytes": hbm})()
        self.run = "estimate"


@pytest.mark.parametrize("refuses_over", [None, 1200])
def test_find_max_batch_with_a_compiler_that_refuses_oversized_programs(
    monkeypatch, refuses_over
):
    """Peak = 1000 + 10 * batch bytes on 4 devices with 10,000 bytes of HBM:
    the largest fitting multiple of 4 is 900. A compiler that raises
    RESOURCE_EXHAUSTED past a batch (as libtpu does) must count as too big."""
    from astrom3_jax.training.planner import batch_search

    hbm, devices, compiled = 10_000, [object()] * 4, []

    def fake_plan(config, topology, *, global_batch, steps, devices):
        compiled.append(global_batch)
        if refuses_over is not None and global_batch > refuses_over:
            raise RuntimeError(
                "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm"
            )
        return _FakePlan(1000 + 10 * global_batch, hbm)

    monkeypatch.setattr(batch_search, "plan", fake_plan)
    config = type("C", (), {"batch_size": 64})()
    batch, got = batch_search.find_max_batch(
        config, "fake", tolerance=0.0, devices=devices, budget_bytes=hbm
    )
    assert batch == 900
    assert got.steps["train"].memory["peak"] == 1000 + 10 * 900
    assert len(compiled) < 20


def test_find_max_batch_passes_other_compile_errors_on(monkeypatch):
    from astrom3_jax.training.planner import batch_search

    def broken(*a, **k):
        raise RuntimeError("INVALID_ARGUMENT: a real bug")

    monkeypatch.setattr(batch_search, "plan", broken)
    config = type("C", (), {"batch_size": 64})()
    with pytest.raises(RuntimeError, match="a real bug"):
        batch_search.find_max_batch(config, "fake", devices=[object()], budget_bytes=1)
