"""export writes each batch's rows as it fetches them: its files equal the same
model outputs gathered whole (evaluation.predict without a sink) and written
at once in plain NumPy, objects lacking modalities included; with several
processes the index comes from the source and only the first writes."""

import jax
import numpy as np

from astrom3_jax import api, export_embeddings, models
from astrom3_jax.analysis import store
from astrom3_jax.training import evaluation
from astrom3_jax.training import workdir as workdir_lib
from tests.helpers.exports import fresh_model, save_at_once, with_ids_and_holes
from tests.helpers.training import fake_examples, ft_config

MODALITIES = ("photometry", "spectra", "metadata")


def test_export_in_batches_equals_the_split_saved_at_once(tmp_path):
    config = ft_config("all,full")  # a fused classifier: embeddings and logits
    wd = str(tmp_path / "wd")
    workdir_lib.save_model_only(wd, models.init_model(config.model, seed=0), config)
    source = with_ids_and_holes(fake_examples(21, 1))
    out = tmp_path / "emb"
    export_embeddings.export(
        wd, "synthetic_sky", ["validation"], str(out), batch_size=8,
        sources={"validation": source}, progress=False,
    )  # fmt: skip

    # The same batches, every row gathered, then written at once.
    model, config = api.load_model(wd)
    got = evaluation.Predictor(model, seed=config.seed).run(
        source, batch_size=8, modalities=MODALITIES, seq_len=config.seq_len,
        host_fields=("label", "id", "name"),
    )  # fmt: skip
    outputs = dict(got.outputs)
    logits = outputs.pop("logits")
    flagged = [m for m in MODALITIES if store.presence_column(m) in outputs]
    present = {m: outputs.pop(store.presence_column(m)) > 0 for m in flagged}
    assert flagged == ["spectra", "metadata"]  # a light curve is always there
    assert len(logits) == 21 and not present["spectra"].all()
    index = {
        "id": np.asarray([e["id"].decode() for e in source]),
        "name": np.asarray([e["name"].decode() for e in source]),
        **{store.presence_column(m): present[m] for m in flagged},
        "label": np.asarray([e["label"] for e in source], np.int64),
    }
    save_at_once(tmp_path / "once", outputs, index, logits)

    for name in (*MODALITIES, "fused", "logits"):
        want = (tmp_path / "once" / f"{name}.npy").read_bytes()
        assert (out / "validation" / f"{name}.npy").read_bytes() == want, name
    with np.load(out / "validation" / "index.npz") as z:
        assert list(z.files) == list(index)
        for key, col in index.items():
            np.testing.assert_array_equal(z[key], col, err_msg=key)
            assert z[key].dtype == col.dtype, key
    split = store.load_split(out, "validation")
    assert np.isnan(split.embeddings["spectra"][~present["spectra"]]).all()
    assert sorted(p.name for p in (out / "validation").iterdir()) == sorted(
        [f"{m}.npy" for m in MODALITIES] + ["fused.npy", "logits.npy", "index.npz"]
    )  # no partial files left


def test_a_sink_gets_every_batch_instead_of_the_prediction(tmp_path):
    config = ft_config("meta,full")
    model = models.init_model(config.model, seed=0)
    model.eval()
    source = fake_examples(13, 2)
    predictor = evaluation.Predictor(model, seed=config.seed)
    kw = dict(batch_size=8, modalities=("metadata",), seq_len=config.seq_len)
    whole = predictor.run(source, **kw)
    batches = []
    kept = predictor.run(source, sink=lambda o, c: batches.append((o, c)), **kw)
    assert kept.outputs == {} and kept.columns == {} and len(kept) == 13
    assert kept.metrics == whole.metrics
    assert [len(c["label"]) for _, c in batches] == [8, 5]
    for key, value in whole.outputs.items():
        joined = np.concatenate([o[key] for o, _ in batches])
        np.testing.assert_array_equal(joined, value, err_msg=key)
    np.testing.assert_array_equal(
        np.concatenate([c["label"] for _, c in batches]), whole.columns["label"]
    )


class _OwnRowsOnly:
    """Predictor.run as one of several processes sees it: every row's
    outputs (the gather gives each process all of them) but the host columns
    (label, id, ...) of its own rows only, here every other row."""

    def __init__(self, outputs):
        self.outputs = outputs

    def run(self, source, *, batch_size, host_fields, sink, **kw):
        for a in range(0, len(source), batch_size):
            rows = range(a, min(a + batch_size, len(source)))
            mine = [source[i] for i in rows if i % 2 == 0]
            sink(
                {k: v[rows.start : rows.stop] for k, v in self.outputs.items()},
                {f: np.asarray([e[f] for e in mine]) for f in host_fields},
            )


def test_with_several_processes_the_index_is_read_from_the_source(
    tmp_path, monkeypatch
):
    """With jax.process_count() > 1 (simulated here: a real two-process run
    is tests/test_sharding.py's kind, but the evaluation step does not run
    across processes on CPU) the index is read from the source and cut
    along the batches; only process 0 writes."""
    config = ft_config("all,full")
    source = with_ids_and_holes(fake_examples(21, 1))
    rng = np.random.default_rng(0)
    outputs = {m: rng.normal(size=(21, 6)).astype(np.float32) for m in MODALITIES}
    present = {
        m: np.asarray([e[m] is not None for e in source]) for m in MODALITIES[1:]
    }
    for m, here in present.items():
        outputs[m][~here] = 0.0
        outputs[store.presence_column(m)] = here.astype(np.float32)
    outputs["logits"] = rng.normal(size=(21, 10)).astype(np.float32)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with store.SplitWriter(tmp_path / "got", "validation") as writer:
        n = export_embeddings.export_split(
            _OwnRowsOnly(outputs), source, config, 8, writer, progress=False
        )
    assert n == 21
    index = {
        "id": np.asarray([e["id"].decode() for e in source]),
        "name": np.asarray([e["name"].decode() for e in source]),
        **{store.presence_column(m): here for m, here in present.items()},
        "label": np.asarray([e["label"] for e in source], np.int64),
    }
    embeddings = {m: outputs[m] for m in MODALITIES}
    save_at_once(tmp_path / "once", embeddings, index, outputs["logits"])
    for name in (*MODALITIES, "fused", "logits"):
        want = (tmp_path / "once" / f"{name}.npy").read_bytes()
        assert (tmp_path / "got" / "validation" / f"{name}.npy").read_bytes() == want
    with np.load(tmp_path / "got" / "validation" / "index.npz") as z:
        assert list(z.files) == list(index)
        for key, col in index.items():
            np.testing.assert_array_equal(z[key], col, err_msg=key)

    # Process 1 runs the model with the others but writes nothing.
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(api, "load_model", fresh_model)
    monkeypatch.setattr(
        evaluation, "Predictor", lambda model, seed: _OwnRowsOnly(outputs)
    )
    out = tmp_path / "process1"
    export_embeddings.export(
        "fresh", "synthetic_sky", ["validation"], str(out), batch_size=8,
        sources={"validation": source}, progress=False,
    )  # fmt: skip
    assert not out.exists() or not list(out.iterdir())
