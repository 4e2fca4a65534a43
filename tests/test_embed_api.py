"""`AstroM3.embed` and the classifiers at the array API boundary.

Checks shapes and batch sizes with messages that name the argument, the
empty batch, mask binarisation, canonical padding (against the data
pipeline's own padding) and that the compiled path matches the plain
forward pass and compiles once per input shape.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from astrom3_jax import models
from astrom3_jax.data import modalities
from astrom3_jax.data.modalities import Ragged, crop_pad
from astrom3_jax.models import clip, inputs, spectra

B = 3


def small_config(task="clip", modalities=None):
    cfg = models.small_model_config()
    cfg.task = task
    if modalities:
        cfg.modalities = modalities
    return cfg


@pytest.fixture(scope="module")
def cfg():
    return small_config()


@pytest.fixture(scope="module")
def model(cfg):
    m = models.build_model(cfg, nnx.Rngs(0))
    m.eval()
    return m


def pipeline_batch(cfg, lengths=(200, 120, 37), seed=0):
    """Arrays as the data pipeline pads them (its crop_pad), batch len(lengths)."""
    r = np.random.default_rng(seed)
    p = cfg.photometry
    curves = [r.normal(size=(n, p.in_channels - 6)).astype(np.float32) for n in lengths]
    aux = r.normal(size=(len(lengths), 6)).astype(np.float32)
    ragged = Ragged.from_list(curves, (p.in_channels - 6,), np.float32)
    starts = np.zeros(len(lengths), np.int64)
    photometry, mask = crop_pad(ragged, aux, starts, p.seq_len)
    n = len(lengths)
    return {
        "photometry": photometry,
        "photometry_mask": mask,
        "spectra": r.normal(size=(n, 3, cfg.spectra.length)).astype(np.float32),
        "metadata": r.normal(size=(n, cfg.metadata.input_dim)).astype(np.float32),
    }


def embed_twin(model, batch):
    """embed() on a copy of `model` (embed is deterministic: the copy only
    guards against a call that would change the model)."""
    return copy.deepcopy(model).embed(**batch)


def plain_forward(model, batch):
    """The uncompiled forward pass with the evaluation key embed uses."""
    rngs = nnx.Rngs(sample=models.eval_key(model.eval_seed))
    return copy.deepcopy(model)(batch, rngs=rngs)


# ------------------------------------------------------------ shapes


def test_mismatched_batch_sizes_are_refused(model, cfg):
    batch = pipeline_batch(cfg)
    batch["metadata"] = batch["metadata"][:2]
    with pytest.raises(inputs.InputError) as info:
        model.embed(**batch)
    message = str(info.value)
    assert "batch size" in message
    assert "photometry (3, 200, 9)" in message and "metadata (2, 34)" in message


@pytest.mark.parametrize(
    "key, shape, expected",
    [
        ("photometry", (B, 200, 8), "(B, 200, 9)"),
        ("photometry", (B, 199, 9), "(B, 200, 9)"),
        ("photometry", (200, 9), "(B, 200, 9)"),
        ("photometry_mask", (B, 200, 1), "(B, 200)"),
        ("spectra", (B, 3, 2000), "(B, 3, 2538..2601)"),
        ("spectra", (B, 2, 2575), "(B, 3, 2538..2601)"),
        ("metadata", (B, 33), "(B, 34)"),
    ],
)
def test_wrong_shapes_name_argument_expected_and_actual(
    model, cfg, key, shape, expected
):
    batch = pipeline_batch(cfg)
    batch[key] = np.zeros(shape, np.float32)
    with pytest.raises(inputs.InputError) as info:
        model.embed(**batch)
    assert f"{key} must have shape {expected}, got {shape}" in str(info.value)


def test_accepted_spectra_lengths_are_those_the_network_maps_to_its_size(model, cfg):
    # Independent: the encoder's own forward length arithmetic.
    size = _out_len(cfg, cfg.spectra.length)
    want = [n for n in range(2000, 3000) if _out_len(cfg, n) == size]
    lo, hi = model.encoders["spectra"].input_lengths()
    assert (lo, hi) == (min(want), max(want)) and len(want) == hi - lo + 1


def _out_len(cfg, length):
    sub = cfg.spectra.copy_and_resolve_references()
    sub.length = length
    return spectra.output_length(sub)


def test_missing_and_unknown_inputs_are_named(model, cfg):
    batch = pipeline_batch(cfg)
    spectra_in = batch.pop("spectra")
    # A modality given in part (a light curve without its mask) is named.
    with pytest.raises(inputs.InputError, match=r"missing input photometry_mask"):
        model.embed(photometry=batch["photometry"], metadata=batch["metadata"])
    with pytest.raises(
        inputs.InputError, match=r"unexpected input\(s\) \['spectrum'\]"
    ):
        model.embed(**batch, spectrum=spectra_in)
    with pytest.raises(inputs.InputError, match="no input given"):
        model.embed()


def test_embed_is_deterministic_and_takes_a_fresh_sample_on_request(model, cfg):
    batch = pipeline_batch(cfg)
    a, b = model.embed(**batch), model.embed(**batch)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # The photometry encoder draws a ProbSparse key sample: another seed
    # gives another sample (the other encoders draw none).
    c = model.embed(**batch, seed=123)
    assert np.abs(np.asarray(c["photometry"]) - np.asarray(a["photometry"])).max() > 0


def test_any_subset_of_modalities_embeds_as_in_the_full_call(model, cfg):
    batch = pipeline_batch(cfg)
    full = model.embed(**batch)
    light_curve_only = model.embed(
        photometry=batch["photometry"], photometry_mask=batch["photometry_mask"]
    )
    assert set(light_curve_only) == {"photometry"}
    np.testing.assert_array_equal(light_curve_only["photometry"], full["photometry"])
    no_spectrum = model.embed(
        photometry=batch["photometry"],
        photometry_mask=batch["photometry_mask"],
        metadata=batch["metadata"],
    )
    assert set(no_spectrum) == {"photometry", "metadata"}
    np.testing.assert_array_equal(no_spectrum["metadata"], full["metadata"])


def test_presence_flags_give_nan_rows_and_ignore_what_absent_rows_hold(model, cfg):
    batch = pipeline_batch(cfg, lengths=(200, 120, 37, 90, 15))
    n = len(batch["metadata"])
    flags = np.ones(n, np.float32)
    flags[[1, 3]] = 0
    spectra_in = batch["spectra"].copy()
    spectra_in[[1, 3]] = np.nan  # absent: anything, NaN included
    got = model.embed(**{**batch, "spectra": spectra_in}, spectra_present=flags)
    full = model.embed(**batch)
    emb = np.asarray(got["spectra"])
    assert np.isnan(emb[[1, 3]]).all()
    keep = flags > 0
    np.testing.assert_array_equal(emb[keep], np.asarray(full["spectra"])[keep])
    np.testing.assert_array_equal(got["photometry"], full["photometry"])
    with pytest.raises(inputs.InputError, match=r"spectra_present must have shape"):
        model.embed(**batch, spectra_present=flags[:2])


def test_fused_classifier_averages_what_an_object_has(cfg):
    cls_cfg = copy.deepcopy(cfg)
    cls_cfg.task = "classification"
    clf = models.build_model(cls_cfg, nnx.Rngs(0))
    clf.eval()
    batch = pipeline_batch(cfg)
    n = len(batch["metadata"])
    # Leaving the spectrum out == flagging every spectrum absent.
    without = clf(
        photometry=batch["photometry"],
        photometry_mask=batch["photometry_mask"],
        metadata=batch["metadata"],
    )
    flagged = clf(**batch, spectra_present=np.zeros(n, np.float32))
    np.testing.assert_allclose(without, flagged, rtol=1e-6, atol=1e-6)
    # ... and equals the head on the mean of the two present embeddings.
    emb = clf.embed(**batch)
    fused = (np.asarray(emb["photometry"]) + np.asarray(emb["metadata"])) / 2
    kernel = np.asarray(clf.fc.kernel[...])
    bias = np.asarray(clf.fc.bias[...])
    np.testing.assert_allclose(without, fused @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_non_numeric_and_non_finite_inputs_are_refused(model, cfg):
    batch = pipeline_batch(cfg)
    with pytest.raises(inputs.InputError, match="metadata must hold real numbers"):
        model.embed(**{**batch, "metadata": batch["metadata"].astype(str)})
    bad = batch["metadata"].copy()
    bad[2, 5] = np.inf
    with pytest.raises(inputs.InputError, match=r"metadata holds NaN or inf .*\[2\]"):
        model.embed(**{**batch, "metadata": bad})
    bad = batch["photometry"].copy()
    bad[1, 3, 0] = np.nan  # a real row (sample 1 has 120 real rows)
    with pytest.raises(inputs.InputError, match=r"real \(mask 1\) rows of .*\[1\]"):
        model.embed(**{**batch, "photometry": bad})


# ------------------------------------------------------------ values


def test_empty_batch_gives_empty_arrays(model, cfg):
    batch = {k: v[:0] for k, v in pipeline_batch(cfg).items()}
    emb = model.embed(**batch)
    assert set(emb) == set(model.modality_names)
    for e in emb.values():
        assert e.shape == (0, cfg.embed_dim) and e.dtype == jnp.float32


def test_mask_values_other_than_one_mean_real(model, cfg):
    batch = pipeline_batch(cfg)
    want = embed_twin(model, batch)
    for mask in (batch["photometry_mask"] * 255, batch["photometry_mask"] > 0):
        got = embed_twin(model, {**batch, "photometry_mask": mask})
        np.testing.assert_allclose(got["photometry"], want["photometry"], atol=1e-6)
    with pytest.raises(inputs.InputError, match="photometry_mask holds NaN"):
        nan_mask = batch["photometry_mask"].copy()
        nan_mask[0, 0] = np.nan
        model.embed(**{**batch, "photometry_mask": nan_mask})


def test_padding_content_does_not_matter(model, cfg):
    batch = pipeline_batch(cfg)
    pad = batch["photometry_mask"] == 0
    assert pad[1:].any() and not pad[0].any()
    want = embed_twin(model, batch)
    r = np.random.default_rng(1)
    for filler in (np.nan, np.inf, "noise"):
        phot = batch["photometry"].copy()
        n_pad = int(pad.sum())
        phot[pad] = r.normal(size=(n_pad, 9)) * 50 if filler == "noise" else filler
        got = embed_twin(model, {**batch, "photometry": phot})
        for name in model.modality_names:
            np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)


def test_padding_matters_to_the_attention_so_it_is_rewritten(model, cfg):
    """Unchecked, other padding changes real rows: canonical form is needed."""
    batch = pipeline_batch(cfg)
    phot = batch["photometry"].copy()
    phot[batch["photometry_mask"] == 0] = 3.0
    raw_a = copy.deepcopy(model)({**batch})
    raw_b = copy.deepcopy(model)({**batch, "photometry": phot})
    assert np.abs(raw_a["photometry"] - raw_b["photometry"]).max() > 1e-4


def test_canonical_photometry_equals_the_pipeline_padding(cfg):
    batch = pipeline_batch(cfg)
    phot, mask = batch["photometry"], batch["photometry_mask"]
    scrambled = phot.copy()
    scrambled[mask == 0] = np.nan
    np.testing.assert_array_equal(
        modalities.canonical_photometry(scrambled, mask), phot
    )
    # A sample without real rows (an evaluation batch's padding sample) -> zeros.
    empty = modalities.canonical_photometry(scrambled[:1], np.zeros_like(mask[:1]))
    np.testing.assert_array_equal(empty, np.zeros_like(phot[:1]))


# ------------------------------------------------------------ compiled path


def test_compiled_embed_equals_the_plain_forward(model, cfg):
    batch = pipeline_batch(cfg)
    plain = plain_forward(model, batch)
    got = embed_twin(model, batch)
    for name in model.modality_names:
        np.testing.assert_allclose(got[name], plain[name], atol=2e-6, err_msg=name)


def test_embed_compiles_once_per_input_shape(cfg, monkeypatch):
    m = models.build_model(cfg, nnx.Rngs(1))
    m.eval()
    traces = []
    forward = clip.AstroM3.embed_given

    def counting(self, batch, *, rngs=None):
        traces.append(batch["metadata"].shape[0])
        return forward(self, batch, rngs=rngs)

    monkeypatch.setattr(clip.AstroM3, "embed_given", counting)
    # Batch sizes no other test uses: compiled programs are shared by every
    # model of the same structure.
    batch = pipeline_batch(cfg, lengths=(9, 10, 11, 12, 13, 14, 15))
    first = m.embed(**batch)
    second = m.embed(**batch)
    m.embed(**pipeline_batch(cfg, lengths=(5, 6, 7, 8, 9, 10)))
    m.embed(**pipeline_batch(cfg, lengths=(7, 8, 9, 10, 11, 12)))
    assert traces == [7, 6]
    # The same input gives the same output (the fixed evaluation key).
    np.testing.assert_array_equal(first["photometry"], second["photometry"])


def test_embed_under_jit_checks_shapes_statically(model, cfg):
    graphdef, state = nnx.split(model)

    @jax.jit
    def embed(state, batch):
        return nnx.merge(graphdef, state).embed(**batch)

    batch = pipeline_batch(cfg)
    # Traced inputs, and constant inputs to a model merged under the jit.
    constant = jax.jit(lambda state: nnx.merge(graphdef, state).embed(**batch))
    plain = plain_forward(model, batch)
    for got in (embed(state, batch), constant(state)):
        for name in model.modality_names:
            np.testing.assert_allclose(got[name], plain[name], atol=2e-6)
    bad = {**batch, "photometry": batch["photometry"][..., :8]}
    with pytest.raises(inputs.InputError, match=r"photometry must have shape"):
        embed(state, bad)


# ------------------------------------------------------------ classifiers


@pytest.fixture(scope="module")
def classifiers():
    out = {}
    for mods in (None, ("photometry",), ("spectra",), ("metadata",)):
        m = models.build_model(small_config("classification", mods), nnx.Rngs(0))
        m.eval()
        out[mods[0] if mods else "all"] = m
    return out


@pytest.mark.parametrize("kind", ["all", "photometry", "spectra", "metadata"])
def test_classifier_empty_batch(classifiers, cfg, kind):
    batch = pipeline_batch(cfg)
    logits = classifiers[kind](**{k: v[:0] for k, v in batch.items()})
    assert logits.shape == (0, 10) and logits.dtype == jnp.float32
    assert classifiers[kind](**batch).shape == (3, 10)


@pytest.mark.parametrize(
    "kind, key", [("all", "spectra"), ("photometry", "photometry")]
)
def test_classifier_mismatched_batch_sizes(classifiers, cfg, kind, key):
    batch = pipeline_batch(cfg)
    with pytest.raises(inputs.InputError) as info:
        classifiers[kind](**{**batch, key: batch[key][:2]})
    assert "disagree on the batch size" in str(info.value)
    assert f"{key} (2, " in str(info.value)


def test_single_input_classifier_batch_sizes_and_typos(classifiers, cfg):
    batch = pipeline_batch(cfg)
    clf = classifiers["photometry"]
    with pytest.raises(inputs.InputError, match="photometry_mask"):
        clf(
            photometry=batch["photometry"], photometry_mask=batch["photometry_mask"][:1]
        )
    with pytest.raises(inputs.InputError, match=r"unexpected input\(s\) \['mask'\]"):
        clf(photometry=batch["photometry"], mask=batch["photometry_mask"])
    # Inputs another modality reads are accepted and ignored.
    own = {k: batch[k] for k in ("photometry", "photometry_mask")}
    np.testing.assert_array_equal(copy.deepcopy(clf)(**batch), copy.deepcopy(clf)(own))


def test_classifier_padding_and_mask_are_canonical(classifiers, cfg):
    clf = classifiers["all"]
    batch = pipeline_batch(cfg)
    want = copy.deepcopy(clf)(**batch)
    phot = batch["photometry"].copy()
    phot[batch["photometry_mask"] == 0] = np.nan
    mask = batch["photometry_mask"] * 255
    got = copy.deepcopy(clf)(**{**batch, "photometry": phot, "photometry_mask": mask})
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_classifier_under_jit_checks_shapes_statically(classifiers, cfg):
    clf = classifiers["metadata"]
    batch = pipeline_batch(cfg)
    graphdef, state = nnx.split(clf)

    @jax.jit
    def logits(state, batch):
        return nnx.merge(graphdef, state)(batch)

    np.testing.assert_allclose(logits(state, batch), clf(batch), atol=1e-5)
    bad = {**batch, "metadata": batch["metadata"][:, :30]}
    with pytest.raises(inputs.InputError, match=r"metadata must have shape \(B, 34\)"):
        logits(state, bad)
