"""Test-session setup that must happen before JAX or grain start.

Eight simulated CPU devices let every test exercise the data-parallel code
path; XLA's heavier optimisations are off (numbers, not speed, are
tested); absl flags are marked parsed because grain's workers read them.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No test writes to the user's compilation cache; tests of the cache set
# their own folder.
os.environ.setdefault("ASTROM3_COMPILATION_CACHE", "off")
# The tests check numbers, not speed: XLA's slow optimisation passes would
# cost more compile time than they save on these tiny programs (about half
# the suite's time). Subprocesses started by tests inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import pytest  # noqa: E402

from tests.helpers.paths import DUMMY  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A TFDS data dir holding full_42 built from dummy_data (once per module)."""
    from astrom3_jax.data import datasets

    d = str(tmp_path_factory.mktemp("tfds"))
    datasets.prepare("full_42", d, DUMMY, num_workers=0)
    return d
