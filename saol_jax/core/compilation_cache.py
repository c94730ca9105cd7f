"""jax's persistent compilation cache, on by default, so that a restarted run does not recompile its steps.

    python -m saol_jax.train ... --compilation_cache=DIR   # another folder (a local path or gs://...)
    python -m saol_jax.train ... --compilation_cache=off   # no persistent cache

The default folder, DEFAULT_DIR, is shared by every run of this user (the
entries are keyed by the program, the jax version and the devices, so runs
never see each other's programs); SAOL_JAX_COMPILATION_CACHE overrides it.
Every program is cached however fast it compiled (jax's own threshold is 1 s).
"""

from __future__ import annotations

import os

import jax

ENV_VAR = "SAOL_JAX_COMPILATION_CACHE"
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "saol_jax", "jax_compilation")
OFF = "off"


def default_location() -> str:
    """The cache folder unless the command line says otherwise: $SAOL_JAX_COMPILATION_CACHE, else DEFAULT_DIR."""
    return os.environ.get(ENV_VAR) or DEFAULT_DIR


def enable(location: str) -> str | None:
    """Turns the persistent cache on in `location` ('off': leaves it off); returns the folder used, or None."""
    if not location or location == OFF:
        return None
    jax.config.update("jax_compilation_cache_dir", location)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return location
