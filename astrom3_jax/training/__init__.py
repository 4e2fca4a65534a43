"""The training layer: one loop, what plugs into it, and the machinery under it.

`run(config, workdir)` is the one entry to pre-training and fine-tuning;
docs/design.md lists what each module of the package does.
"""


def run(config, workdir, **kwargs):
    """Train (or resume) in `workdir`, then score; see `runner.run`."""
    # Imported on use: the planner and checkpoint tools of this package must
    # not load the data pipeline and TFDS.
    from astrom3_jax.training import runner

    return runner.run(config, workdir, **kwargs)
