"""A fourth modality is one registry entry plus one encoder module.

A toy 'colour' modality (four colours per star, stored as their own feature,
read from four columns of a user's catalogue, embedded by a one-layer MLP)
goes through the input pipeline, CLIP pre-training with `training.run`, the
embeddings export, `load_model` + `embed`, the planner's compiled train
step, a TFDS build of a user's catalogue (the `catalog` config) and
`predict` on a catalogue, with no other change to the package.
"""

import os

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh

from astrom3_jax import api, export_embeddings, predict_lib, training
from astrom3_jax.analysis import store
from astrom3_jax.data import datasets, modalities, pipeline
from astrom3_jax.training import sharding
from astrom3_jax.training.planner import programs
from tests.helpers.paths import DUMMY
from tests.helpers.release import (
    catalog_row,
    dummy_release_rows,
    extract_dats,
    write_catalog,
)
from tests.helpers.training import fake_sources, tiny_config

N_COLOURS = 4
COLOUR_COLUMNS = tuple(f"colour_{i}" for i in range(N_COLOURS))


class ColourMLP(nnx.Module):
    """The toy encoder: colours -> hidden_dim features."""

    def __init__(self, sub_config, *, dtype, rngs):
        self.fc = nnx.Linear(
            sub_config.input_dim, sub_config.hidden_dim, dtype=dtype, rngs=rngs
        )
        self.output_dim = sub_config.hidden_dim

    def input_dims(self):
        return ((self.fc.in_features,),)

    def __call__(self, colour, *, rngs=None):
        return jax.nn.relu(self.fc(colour))


def colours(cols, ctx):
    del ctx
    return {"colour": np.asarray(cols["colour"], np.float32)}


def colours_of_row(values):
    """A catalogue row's colours: all four, or none (the star lacks them)."""
    given = np.array([values[c] for c in COLOUR_COLUMNS], np.float64)
    if np.isnan(given).all():
        return None
    if np.isnan(given).any():
        raise ValueError(f"give all of {', '.join(COLOUR_COLUMNS)} or none")
    return {"colour": given.astype(np.float32)}


COLOUR = modalities.Modality(
    "colour",
    fields=("colour",),
    batch_keys=("colour",),
    transform=colours,
    encoder=ColourMLP,
    architecture=("input_dim", "hidden_dim"),
    stored=(modalities.StoredField("colour", (N_COLOURS,)),),
    catalog_columns=COLOUR_COLUMNS,
    from_catalog=colours_of_row,
)
NAMES = ("photometry", "metadata", "colour")


@pytest.fixture
def colour_registered():
    with modalities.temporarily(COLOUR):
        yield


def colour_config(**kw):
    c = tiny_config(num_epochs=1, max_steps_per_epoch=2, **kw)
    c.model.modalities = NAMES
    c.model.colour = {"input_dim": N_COLOURS, "hidden_dim": 8}
    return c


def with_colours(sources):
    """Fake examples with a stored `colour`: their first metadata values."""
    return {
        split: [{**e, "colour": e["metadata"][:N_COLOURS]} for e in examples]
        for split, examples in sources.items()
    }


# Slow (about a minute on 2 cores): run by `-m slow`, as CI does.
@pytest.mark.slow
@pytest.mark.usefixtures("colour_registered")
def test_a_fourth_modality_from_pipeline_to_plan(tmp_path):
    c, sources = colour_config(), with_colours(fake_sources())
    want = np.stack([e["colour"] for e in sources["validation"]])

    # Input pipeline: the registry entry's transform fills its batch key.
    batches = list(
        pipeline.make_eval_batches(
            sources["validation"], batch_size=c.eval_batch_size,
            modalities=NAMES, seq_len=c.seq_len,
        )
    )  # fmt: skip
    got = np.concatenate([b["colour"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(got, want)

    # Pre-training: the loss and the retrieval metrics pair it with the others.
    wd = str(tmp_path / "clip")
    last = training.run(c, wd, sources=sources).last
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["val_loss"])
    assert "val_full_recall@1/colour->metadata" in last

    # Export: its embeddings are the model's, row for row.
    out = str(tmp_path / "export")
    export_embeddings.export(
        wd, c.dataset, ["validation"], out, sources=sources, progress=False
    )
    exported = store.load_split(out, "validation").embeddings["colour"]
    model, _ = api.load_model(wd)
    direct = model.embed(colour=want)["colour"]
    np.testing.assert_allclose(exported, np.asarray(direct), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="colour"):
        model.embed(colour=want[:, :3])  # the encoder's input_dims are checked

    # Plan: the batch shapes come from the encoder, and the step compiles.
    shapes = programs.batch_shapes(c, 8)
    assert shapes["colour"].shape == (8, N_COLOURS)
    mesh = Mesh(np.array(jax.devices()), (sharding.AXIS,))
    step, args = programs.step_programs(c, mesh, {"train": 16})["train"]
    compiled = step.lower(*args).compile()
    assert compiled.memory_analysis() is not None


def colour_catalogue(root, blank=()):
    """dummy_data's objects as a user's catalogue with four colour columns
    (row i's colours: i + 0.25 * k); the rows `blank` leave them blank."""
    curves, tables = root / "curves", root / "tables"
    extract_dats(curves)
    tables.mkdir(exist_ok=True)
    spectra = os.path.abspath(os.path.join(DUMMY, "spectra"))
    rows, want = [], {}
    for i, (split, r) in enumerate(dummy_release_rows()):
        row = catalog_row(split, r, curves, spectra, cat_dir=tables)
        values = [i + 0.25 * k for k in range(N_COLOURS)]
        row.update(dict(zip(COLOUR_COLUMNS, map(repr, values), strict=True)))
        if i in blank:
            row.update(dict.fromkeys(COLOUR_COLUMNS, ""))
        else:
            want[row["id"]] = np.asarray(values, np.float32)
        rows.append(row)
    return write_catalog(tables / "catalog.csv", rows), want


@pytest.mark.usefixtures("colour_registered")
def test_a_fourth_modality_from_catalogue_build_to_predictions(tmp_path):
    # Build: the catalog config stores the colours its reader took from the table.
    table, want = colour_catalogue(tmp_path / "build")
    data_dir = str(tmp_path / "tfds")
    built = datasets.prepare("catalog", data_dir, os.path.dirname(table), num_workers=0)
    assert built.info.features["colour"].shape == (N_COLOURS,)
    for split in ("train", "validation", "test"):
        source = built.as_data_source(split)
        for i in range(len(source)):
            ex = source[i]
            np.testing.assert_array_equal(ex["colour"], want[ex["id"].decode()])

    # Pre-training on the build (the run records its statistics for predict).
    wd = str(tmp_path / "clip")
    training.run(colour_config(dataset="catalog", data_dir=data_dir), wd)

    # Predict: a catalogue whose row 3 has no colours; its colour embedding
    # is absent, the others are the model's.
    table, want = colour_catalogue(tmp_path / "predict", blank=(3,))
    got = predict_lib.predict(
        wd, table, str(tmp_path / "out"), num_workers=0, progress=False
    )
    has = got.present["colour"]
    assert not has[3] and has.sum() == len(has) - 1
    assert "colour" not in got.rows[3]["modalities_used"]
    assert "colour" in got.rows[0]["modalities_used"]
    model, _ = api.load_model(wd)
    direct = np.asarray(model.embed(colour=np.stack(list(want.values())))["colour"])
    direct = direct / np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(got.embeddings["colour"][has], direct, atol=1e-5)
    assert np.isnan(got.embeddings["colour"][3]).all()
