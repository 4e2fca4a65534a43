"""Paths the tests read from the repository."""

import os

# The repository root: subprocesses put it on sys.path or run there.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The dummy release the TFDS builder's manual_dir points at in tests.
DUMMY = os.path.join(ROOT, "tfds_builders", "astrom3", "dummy_data")
