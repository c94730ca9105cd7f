"""Joining a multi-process JAX run (TPU pod slices, multi-node GPU, bare clusters).

`initialize()` must run before anything touches a device. What it does is
decided by `plan()`, a pure function of the flags and the environment:

- explicit settings win: the flags `--coordinator_address`,
  `--num_processes`, `--process_id`, or the environment variables
  SAOL_COORDINATOR_ADDRESS, SAOL_NUM_PROCESSES, SAOL_PROCESS_ID (all three
  together; one process alone stays single-process);
- otherwise a cluster that jax can describe itself is detected from the
  environment and `jax.distributed.initialize()` reads it: SLURM job steps
  with several tasks (srun), multi-host Cloud TPU slices on GKE (or any host
  that sets TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES / MEGASCALE_*),
  Open MPI (mpirun) and Kubernetes JobSets (GPU pods need `pip install jax[k8s]`);
- `mode='on'` (`--distributed=on`) always initialises, letting jax find the
  cluster itself: use it on Cloud TPU VM slices created with gcloud, whose
  layout jax reads from the GCE metadata server (launch/tpu_pod.sh does);
- a plain single machine stays single-process; `mode='off'` never initialises.

On SLURM, jax gives each process the one GPU numbered SLURM_LOCALID. That is
right for one process per GPU; with one process per node `plan()` hands the
process every GPU of its node instead (read from CUDA_VISIBLE_DEVICES or
SLURM_GPUS_ON_NODE; JAX_LOCAL_DEVICE_IDS, when set, wins).

Failures: every process sends the coordination service a heartbeat; when one
falls silent for `heartbeat_timeout_s` (a crashed host, kill -9) the service
declares it dead and the others exit non-zero with jax's message, rather than
waiting in a collective. A SIGTERM to any process is a pre-emption notice
that jax's preemption service shares with all of them (saol_jax.core.trainer).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import jax

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
# A lost process (crashed host, kill -9) is noticed by the others after this long without a
# heartbeat; they then exit non-zero instead of waiting in a collective. jax's default is 100 s.
HEARTBEAT_TIMEOUT_S = 60


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _slurm_tasks_on_node(env: Mapping[str, str]) -> int:
    """Tasks of this job step on this node, from SLURM_STEP_TASKS_PER_NODE ('4(x2),2') and SLURM_NODEID."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    counts: list[int] = []
    for item in filter(None, spec.split(",")):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not match:
            return 0
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    node = _int(env.get("SLURM_NODEID"), 0)
    if counts and node < len(counts):
        return counts[node]
    return _int(env.get("SLURM_NTASKS_PER_NODE"), 0)


def _visible_gpus(env: Mapping[str, str]) -> int:
    """GPUs this process may see according to the environment (0 = unknown)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "NoDevFiles"):
        return len([d for d in visible.split(",") if d.strip()])
    return _int(env.get("SLURM_GPUS_ON_NODE"), 0)


def cluster_detected(env: Mapping[str, str] = os.environ) -> str | None:
    """The kind of multi-process cluster this process runs in ('slurm', 'tpu', 'mpi', 'kubernetes'), or None."""
    slurm_step = all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID"))
    if slurm_step and _int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS"), 1) > 1:
        return "slurm"
    workers = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if "," in workers or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    if "OMPI_MCA_orte_hnp_uri" in env and _int(env.get("OMPI_COMM_WORLD_SIZE"), 1) > 1:
        return "mpi"
    if "JOBSET_NAME" in env or ("KUBERNETES_SERVICE_HOST" in env and "JAX_COORDINATOR_ADDRESS" in env):
        return "kubernetes"
    return None


def explicit_settings(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    env: Mapping[str, str] = os.environ,
) -> dict | None:
    """Coordinator/process settings from flags or SAOL_* variables; None when absent.

    Flags win over the environment, field by field. Raises ValueError when
    only some are given or they are inconsistent.
    """
    address = coordinator_address or env.get("SAOL_COORDINATOR_ADDRESS") or None
    count = num_processes if num_processes is not None else (env.get("SAOL_NUM_PROCESSES") or None)
    index = process_id if process_id is not None else (env.get("SAOL_PROCESS_ID") or None)
    given = [v is not None for v in (address, count, index)]
    if not any(given):
        return None
    if not all(given):
        missing = [name for name, ok in zip(
            ("coordinator address (--coordinator_address / SAOL_COORDINATOR_ADDRESS)",
             "number of processes (--num_processes / SAOL_NUM_PROCESSES)",
             "process id (--process_id / SAOL_PROCESS_ID)"), given) if not ok]
        raise ValueError(
            "a multi-process run needs all three of coordinator address, number of processes and "
            f"process id; missing: {', '.join(missing)}"
        )
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise ValueError(f"num_processes and process_id must be integers, got {count!r} and {index!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, got {count} and {index}")
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator address must be host:port, got {address!r}")
    return {"coordinator_address": str(address), "num_processes": count, "process_id": index}


def plan(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str = "auto",
    env: Mapping[str, str] = os.environ,
) -> dict | None:
    """The keyword arguments for `jax.distributed.initialize`, or None to stay single-process.

    An empty dict means "let jax detect everything".
    """
    if mode not in MODES:
        raise ValueError(f"distributed mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    settings = explicit_settings(coordinator_address, num_processes, process_id, env)
    if settings is not None:
        if settings["num_processes"] == 1 and mode == "auto":
            return None
        return settings
    kind = cluster_detected(env)
    if kind is None and mode == "auto":
        return None
    kwargs: dict = {}
    if kind == "slurm" and not env.get("JAX_LOCAL_DEVICE_IDS"):
        tasks, gpus = _slurm_tasks_on_node(env), _visible_gpus(env)
        if tasks == 1 and gpus > 1:
            # One process per node: all of the node's GPUs (jax would take only GPU SLURM_LOCALID).
            kwargs["local_device_ids"] = list(range(gpus))
        elif tasks > 1 and gpus == 1:
            # One process per GPU, bound by SLURM (--gpus-per-task): the one visible GPU is number 0.
            kwargs["local_device_ids"] = [0]
    return kwargs


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str = "auto",
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
    env: Mapping[str, str] = os.environ,
) -> bool:
    """Initialises `jax.distributed` when this process is one of several; True if it did.

    mode: 'auto' (explicit settings, else a detected cluster, else nothing),
    'on' (always initialise; jax detects what is not given), 'off'.
    heartbeat_timeout_s: a process silent this long is declared dead and
    every other process then exits non-zero (see the module docstring).
    """
    kwargs = plan(coordinator_address, num_processes, process_id, mode=mode, env=env)
    if kwargs is None:
        return False
    if heartbeat_timeout_s < 1:
        raise ValueError(f"heartbeat timeout must be at least 1 s, got {heartbeat_timeout_s}")
    if "coordinator_address" in kwargs:
        log.info("jax.distributed.initialize(%s)", kwargs)
    else:
        log.info("jax.distributed.initialize(%s) on a %s cluster", kwargs or "", cluster_detected(env) or "jax-detected")
    try:
        jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=heartbeat_timeout_s)
    except ValueError as error:
        if "coordinator_address" in kwargs:
            raise
        raise ValueError(
            f"jax could not describe the cluster itself ({error}); pass --coordinator_address, "
            "--num_processes and --process_id (or SAOL_* variables), or --distributed=off"
        ) from error
    return True


def describe() -> str:
    """'process i of n, L local / G global devices (platform)'; touches the devices."""
    return (
        f"process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local / "
        f"{jax.device_count()} global {jax.default_backend()} devices"
    )
