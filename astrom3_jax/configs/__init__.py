"""Run configs as code: `pretrain.get_config(variant)`, `finetune.get_config(arg)`.

The repository's top-level `configs/*.py` files re-export these, so both
`--config configs/pretrain.py:cpu` (from a checkout) and the installed
package work; the command lines also find `configs/<name>.py` here when the
path does not exist in the working directory.
"""


def preset_config(config):
    """The config `config` was made from, before any override: its preset
    variant of pre-training, or of fine-tuning for its mode and subset."""
    # Local: finetune and pretrain import this package.
    from astrom3_jax.configs import finetune, pretrain

    if not config.mode:
        return pretrain.get_config(config.preset)
    clip = ",clip" if config.pretrained else ""
    return finetune.get_config(f"{config.mode},{config.subset},{config.preset}{clip}")
