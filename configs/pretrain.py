"""The pretrain configs live in `astrom3_jax/configs/pretrain.py` (see its docstring).

This file lets `--config configs/pretrain.py:<variant>` work from a checkout.
"""

from astrom3_jax.configs.pretrain import *  # noqa: F403
from astrom3_jax.configs.pretrain import get_config  # noqa: F401
