"""Test-session setup that must happen before JAX or grain start.

Eight simulated CPU devices let every test exercise the data-parallel code
path; absl flags are marked parsed because grain's workers read them.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
