"""JAX's persistent compilation cache, on by default in a per-user folder.

Every process that loads a model compiles its programs again (the paper
model's first `embed` takes about 11 s on 2 cores); with the cache on disk a
second process reads them back instead (at most 2 GiB, oldest reads evicted
first). `ASTROM3_COMPILATION_CACHE` names another folder, or turns the cache
off with `off`.
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "ASTROM3_COMPILATION_CACHE"
OFF_VALUES = ("off", "0", "false", "no", "none")
# Programs that compile faster than this are not worth a file each.
MIN_COMPILE_SECONDS = 0.1
# Least recently read entries go first beyond this size (JAX's own eviction).
MAX_BYTES = 2 << 30


def cache_dir(environ=None) -> str | None:
    """The folder `enable` uses, or None when the cache is turned off.

    `$ASTROM3_COMPILATION_CACHE` if set, else `$XDG_CACHE_HOME/astrom3_jax/jax`
    (`~/.cache/astrom3_jax/jax` without XDG_CACHE_HOME).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    if value:
        return os.path.abspath(os.path.expanduser(value))
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "astrom3_jax", "jax")


def enable(environ=None) -> str | None:
    """Turn the cache on; returns the folder in use, or None when off.

    Before JAX is imported this only sets JAX's environment variables, so a
    command line can still restart itself (tcmalloc) and its subprocesses
    inherit the cache. A folder the user already gave JAX
    (`JAX_COMPILATION_CACHE_DIR`, or `jax.config`) is kept as it is. A folder
    that cannot be created only costs the speed-up.
    """
    jax = sys.modules.get("jax")
    given = os.environ.get("JAX_COMPILATION_CACHE_DIR") or (
        jax.config.jax_compilation_cache_dir if jax is not None else None
    )
    if given:
        return given
    path = cache_dir(environ)
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        logging.warning("compilation cache off: cannot create %s (%s)", path, e)
        return None
    settings = {"jax_compilation_cache_dir": path}
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        settings["jax_persistent_cache_min_compile_time_secs"] = MIN_COMPILE_SECONDS
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        settings["jax_compilation_cache_max_size"] = MAX_BYTES
    if jax is None:
        os.environ.update({k.upper(): str(v) for k, v in settings.items()})
        return path
    for name, value in settings.items():
        jax.config.update(name, value)
    # JAX decides whether to use the cache at its first compilation; a
    # process that compiled something before this call must decide again.
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
    return path
