"""Device mesh, shardings and host-to-global batch assembly.

The whole program is one `jax.jit` over a 1-D mesh with a `data` axis:
parameters are replicated, every batch is sharded along its leading axis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named `data` over the first `num_devices` devices (all by default)."""
    available = jax.device_count()
    num_devices = num_devices or available
    if num_devices > available:
        raise ValueError(f"asked for {num_devices} devices, only {available} are visible")
    devices = jax.devices()[:num_devices]
    return jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> int:
    """Returns the per-device batch; raises if the global batch does not split evenly."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ValueError(
            f"{what}={global_batch_size} is not divisible by the {devices} devices of the mesh"
        )
    return global_batch_size // devices


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each host's slice of the batch into global arrays sharded on `data`."""
    sharding = batch_sharded(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local.items()
    }


# A CPU device that the OS does not schedule for a while (a busy laptop, more
# devices than cores) must not abort the run: XLA's default is 40 s.
CPU_COLLECTIVE_FLAGS = (
    "--xla_cpu_collective_call_terminate_timeout_seconds=1800",
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=300",
)


def relax_cpu_collective_timeouts() -> None:
    """Adds CPU_COLLECTIVE_FLAGS to XLA_FLAGS (effective if jax has not started its backends)."""
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in CPU_COLLECTIVE_FLAGS if f.split("=")[0] not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU host into `count` devices (0 = leave as is).

    XLA's CPU convolutions run faster per image on small per-device batches,
    so several CPU devices running the same sharded step train faster than
    one. Must run before jax creates its backends; afterwards a mismatch is
    an error rather than a silent no-op.
    """
    relax_cpu_collective_timeouts()
    if count <= 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        if jax.default_backend() == "cpu" and jax.local_device_count() != count:
            raise RuntimeError(
                f"num_cpu_devices={count} must be set before jax initialises "
                f"(it already has {jax.local_device_count()} CPU devices); "
                "set it in a fresh process or leave it at 0"
            ) from error
