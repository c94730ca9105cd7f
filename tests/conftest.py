"""Test set-up: 8 fake CPU devices before jax initialises, TensorFlow kept quiet and off any GPU."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

from saol_jax.core import compilation_cache  # noqa: E402
from saol_jax.core.sharding import relax_cpu_collective_timeouts  # noqa: E402

relax_cpu_collective_timeouts()

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
pytest_plugins = ["tfds_fixtures"]

# jax's persistent compilation cache for the programs the tests compile in this process, in a folder of
# this session: the many trainers built on the same tiny configs compile each program once, as a user's
# re-runs do (commands run by the tests use their own default folder, as a user's do).
_CACHE_DIR = tempfile.mkdtemp(prefix="saol_jax_test_compiled_")
compilation_cache.enable(_CACHE_DIR)
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
