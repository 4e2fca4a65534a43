"""Run configs as code: `pretrain.get_config(variant)`, `finetune.get_config(arg)`.

The repository's top-level `configs/*.py` files re-export these, so both
`--config configs/pretrain.py:cpu` (from a checkout) and the installed
package work; the command lines also find `configs/<name>.py` here when the
path does not exist in the working directory.
"""
