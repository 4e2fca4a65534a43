"""The finetune configs live in `astrom3_jax/configs/finetune.py` (see its docstring).

This file lets `--config configs/finetune.py:<variant>` work from a checkout.
"""

from astrom3_jax.configs.finetune import *  # noqa: F403
from astrom3_jax.configs.finetune import get_config  # noqa: F401
