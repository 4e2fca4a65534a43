"""A fourth modality is one registry entry plus one encoder module.

A toy 'colour' modality (four catalogue colours taken from the stored
metadata vector, embedded by a one-layer MLP) goes through the input
pipeline, CLIP pre-training with `training.run`, the embeddings export,
`load_model` + `embed` and the planner's compiled train step, with no
other change to the package.
"""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh

from astrom3_jax import api, export_embeddings, training
from astrom3_jax.analysis import store
from astrom3_jax.data import modalities, pipeline
from astrom3_jax.training import sharding
from astrom3_jax.training.planner import programs
from tests.helpers.training import fake_sources, tiny_config

N_COLOURS = 4


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
    return {"colour": np.asarray(cols["metadata"], np.float32)[:, :N_COLOURS]}


COLOUR = modalities.Modality(
    "colour",
    fields=("metadata",),
    batch_keys=("colour",),
    transform=colours,
    encoder=ColourMLP,
    architecture=("input_dim", "hidden_dim"),
)
NAMES = ("photometry", "metadata", "colour")


@pytest.fixture
def colour_registered():
    with modalities.temporarily(COLOUR):
        yield


def colour_config():
    c = tiny_config(num_epochs=1, max_steps_per_epoch=2)
    c.model.modalities = NAMES
    c.model.colour = {"input_dim": N_COLOURS, "hidden_dim": 8}
    return c


@pytest.mark.usefixtures("colour_registered")
def test_a_fourth_modality_from_pipeline_to_plan(tmp_path):
    c, sources = colour_config(), fake_sources()
    want = np.stack([e["metadata"][:N_COLOURS] for e in sources["validation"]])

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
