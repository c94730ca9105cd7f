"""Test set-up: 8 fake CPU devices before jax initialises, TensorFlow kept quiet and off any GPU."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

from saol_jax.core.sharding import relax_cpu_collective_timeouts  # noqa: E402

relax_cpu_collective_timeouts()

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
pytest_plugins = ["tfds_fixtures"]
