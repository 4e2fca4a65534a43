"""The persistent compilation cache: where it lives, how it is turned off,
and that a second process reads back what the first compiled."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import pytest
from jax.experimental.compilation_cache import compilation_cache

from astrom3_jax import compile_cache, models
from astrom3_jax.training import workdir as workdir_lib
from tests.helpers.paths import ROOT


def test_cache_dir_rules(tmp_path):
    home = os.path.expanduser("~")
    assert compile_cache.cache_dir({}) == os.path.join(
        home, ".cache", "astrom3_jax", "jax"
    )
    xdg = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache.cache_dir(xdg) == str(tmp_path / "astrom3_jax" / "jax")
    for off in ("off", "OFF", "0", "false", "no", "none", " off "):
        assert compile_cache.cache_dir({compile_cache.ENV: off, **xdg}) is None
    given = {compile_cache.ENV: str(tmp_path / "mine"), **xdg}
    assert compile_cache.cache_dir(given) == str(tmp_path / "mine")
    tilde = {compile_cache.ENV: "~/x"}
    assert compile_cache.cache_dir(tilde) == os.path.join(home, "x")


@pytest.fixture
def pristine_jax_cache_config():
    """enable() changes JAX's global config: put it back for later tests."""
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_compilation_cache_max_size",
    )
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)
    compilation_cache.reset_cache()


@pytest.mark.usefixtures("pristine_jax_cache_config")
def test_enable_sets_jax_config_and_keeps_a_users_folder(tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.enable({compile_cache.ENV: "off"}) is None
    assert jax.config.jax_compilation_cache_dir is None

    folder = tmp_path / "cache"
    assert compile_cache.enable({compile_cache.ENV: str(folder)}) == str(folder)
    assert folder.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_compilation_cache_max_size == compile_cache.MAX_BYTES

    # A folder the user gave JAX wins over ours.
    other = {compile_cache.ENV: str(tmp_path / "other")}
    assert compile_cache.enable(other) == str(folder)
    assert not (tmp_path / "other").exists()


@pytest.mark.usefixtures("pristine_jax_cache_config")
def test_a_folder_that_cannot_be_made_turns_the_cache_off(tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert compile_cache.enable({compile_cache.ENV: str(blocker / "c")}) is None
    assert jax.config.jax_compilation_cache_dir is None


def test_before_jax_is_imported_only_environment_variables_are_set(tmp_path):
    """A command line enables the cache before it may restart itself: JAX
    must not be imported yet, and JAX must read the folder once it is."""
    script = (
        "import sys\n"
        "from astrom3_jax import compile_cache\n"
        "path = compile_cache.enable()\n"
        "assert 'jax' not in sys.modules\n"
        "import jax\n"
        "c = jax.config\n"
        "print(path, c.jax_compilation_cache_dir, c.jax_compilation_cache_max_size,\n"
        "      c.jax_persistent_cache_min_compile_time_secs)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update({compile_cache.ENV: str(tmp_path / "c"), "PYTHONPATH": ROOT})
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    path, jax_dir, size, seconds = done.stdout.split()
    assert path == jax_dir == str(tmp_path / "c")
    assert int(size) == compile_cache.MAX_BYTES
    assert float(seconds) == compile_cache.MIN_COMPILE_SECONDS


PROBE = r"""
import json, sys
import jax, numpy as np
events = {"hits": 0, "misses": 0}
def count(name, **kw):
    if name.endswith("/cache_hits"): events["hits"] += 1
    if name.endswith("/cache_misses"): events["misses"] += 1
jax.monitoring.register_event_listener(count)
import astrom3_jax
model, config = astrom3_jax.load_model(sys.argv[1])
m = config.model
r = np.random.default_rng(0)
emb = model.embed(
    photometry=r.normal(size=(2, m.photometry.seq_len, m.photometry.in_channels)),
    photometry_mask=np.ones((2, m.photometry.seq_len)),
    spectra=r.normal(size=(2, 3, m.spectra.length)),
    metadata=r.normal(size=(2, m.metadata.input_dim)),
)
emb = {k: np.asarray(v).tolist() for k, v in emb.items()}
print(json.dumps({**events, "emb": emb}))
"""


def test_a_second_process_reads_back_what_the_first_compiled(tmp_path):
    workdir = tmp_path / "run"
    config = ml_collections.ConfigDict({"model": models.small_model_config()})
    config.seed = 0
    model = models.init_model(config.model, seed=0)
    workdir_lib.save_model_only(str(workdir), model, config)

    cache = tmp_path / "cache"
    env = {
        **os.environ,
        compile_cache.ENV: str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "PYTHONPATH": ROOT,
    }

    def probe():
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(workdir)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = probe()
    assert first["hits"] == 0 and first["misses"] > 0
    assert any(cache.iterdir())
    second = probe()
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert second["emb"] == first["emb"]
