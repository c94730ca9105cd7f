"""Joining a multi-process JAX run (TPU pod slices, multi-node GPU, bare clusters).

Must run before anything touches a device. Explicit settings win (flags, or
the environment variables SAOL_COORDINATOR_ADDRESS, SAOL_NUM_PROCESSES,
SAOL_PROCESS_ID); otherwise a cluster that jax can describe itself (Cloud TPU
multi-host slices, SLURM jobs with several tasks, Kubernetes/GKE jobs) is
detected and `jax.distributed.initialize()` reads it from the environment.
A plain single machine stays single-process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import jax

log = logging.getLogger(__name__)


def cluster_detected(env: Mapping[str, str] = os.environ) -> str | None:
    """The kind of multi-process cluster this process runs in, or None."""
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return "slurm"
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    if "JOBSET_NAME" in env or ("KUBERNETES_SERVICE_HOST" in env and "JAX_COORDINATOR_ADDRESS" in env):
        return "kubernetes"
    return None


def explicit_settings(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    env: Mapping[str, str] = os.environ,
) -> dict | None:
    """Coordinator/process settings from flags or SAOL_* variables; None when absent."""
    address = coordinator_address or env.get("SAOL_COORDINATOR_ADDRESS")
    count = num_processes if num_processes is not None else env.get("SAOL_NUM_PROCESSES")
    index = process_id if process_id is not None else env.get("SAOL_PROCESS_ID")
    given = [v is not None and v != "" for v in (address, count, index)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError(
            "a multi-process run needs all three of coordinator address, number of processes "
            "and process id (flags --coordinator_address/--num_processes/--process_id or "
            "SAOL_COORDINATOR_ADDRESS/SAOL_NUM_PROCESSES/SAOL_PROCESS_ID)"
        )
    return {"coordinator_address": address, "num_processes": int(count), "process_id": int(index)}


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str = "auto",
) -> None:
    """Initialises `jax.distributed` when this process is one of several.

    mode: 'auto' (explicit settings, else a detected cluster, else nothing),
    'on' (always initialise, letting jax detect the cluster), 'off'.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"distributed mode must be auto, on or off, got {mode!r}")
    if mode == "off":
        return
    settings = explicit_settings(coordinator_address, num_processes, process_id)
    if settings is not None:
        log.info("jax.distributed.initialize(%s)", settings)
        jax.distributed.initialize(**settings)
        return
    kind = cluster_detected()
    if kind is not None or mode == "on":
        log.info("jax.distributed.initialize() for a %s cluster", kind or "detected")
        jax.distributed.initialize()
