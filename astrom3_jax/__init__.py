"""astrom3-jax: AstroM3 multimodal self-supervised learning in JAX/Flax.

Heavy submodules (JAX, TFDS) load on first use, so that `import astrom3_jax`
stays cheap for command-line tools and data-only work.
"""

__version__ = "0.1.0"
__all__ = ["catalog_inputs", "load_model"]


def __getattr__(name):
    if name == "load_model":
        from astrom3_jax.api import load_model

        return load_model
    if name == "catalog_inputs":
        from astrom3_jax.prediction.inputs import catalog_inputs

        return catalog_inputs
    raise AttributeError(f"module 'astrom3_jax' has no attribute {name!r}")
