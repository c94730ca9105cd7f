"""Multi-process training: two local processes of 4 CPU devices each against one of 8 devices.

Both runs go through the real entry point (`python -m saol_jax.train`) and
read the same global batches (`dataset.host_shards=2`: process i of the
two-process run reads share i, the single process reads both), so their
losses and parameters must agree to float tolerance. The two-process run is
then restarted with more steps and must resume from its shared checkpoint.
Also unit tests of `saol_jax.core.distributed`'s decisions, from environment dicts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from commands import run_command, smoke_args, start_command
from saol_jax.core import checkpoint, distributed

LOSS_TERMS = ("saol_ce", "ss1", "ss2", "sd", "gap_ce", "total")
TIMEOUT_S = 420


# ------------------------------------------------------------------ plan() from environments


SLURM_STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "gpu[01-02]",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
}


def test_plain_machine_stays_single_process():
    assert distributed.plan(env={}) is None
    assert distributed.plan(env={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None
    assert distributed.plan(env={"TPU_WORKER_HOSTNAMES": "localhost"}) is None
    assert distributed.cluster_detected({}) is None


def test_explicit_flags_and_environment():
    want = {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
    assert distributed.plan("10.0.0.1:1234", 4, 2, env={}) == want
    env = {"SAOL_COORDINATOR_ADDRESS": "10.0.0.1:1234", "SAOL_NUM_PROCESSES": "4", "SAOL_PROCESS_ID": "2"}
    assert distributed.plan(env=env) == want
    # Flags win over the environment, field by field.
    assert distributed.plan(None, None, 3, env=env) == {**want, "process_id": 3}
    # Explicit settings win over a detected cluster.
    assert distributed.plan(env={**env, **SLURM_STEP, "SLURM_NTASKS": "2"}) == want
    # One process is a single-process run, unless forced on.
    assert distributed.plan("h:1", 1, 0, env={}) is None
    assert distributed.plan("h:1", 1, 0, mode="on", env={}) == {
        "coordinator_address": "h:1", "num_processes": 1, "process_id": 0}


@pytest.mark.parametrize(
    "args, env, message",
    [
        (("h:1", 2, None), {}, "process id"),
        ((None, 2, 0), {}, "coordinator address"),
        ((None, None, None), {"SAOL_PROCESS_ID": "0"}, "number of processes"),
        (("h:1", 2, 2), {}, "process_id < num_processes"),
        (("h:1", 0, 0), {}, "num_processes >= 1"),
        (("h", 2, 0), {}, "host:port"),
        ((None, None, None), {"SAOL_COORDINATOR_ADDRESS": "h:1", "SAOL_NUM_PROCESSES": "two",
                              "SAOL_PROCESS_ID": "0"}, "integers"),
    ],
    ids=["no-id", "no-address", "env-partial", "id-too-large", "zero-processes", "no-port", "not-int"],
)
def test_incomplete_or_inconsistent_settings_are_errors(args, env, message):
    with pytest.raises(ValueError, match=message):
        distributed.plan(*args, env=env)


def test_modes():
    cluster = {**SLURM_STEP, "SLURM_NTASKS": "2"}
    assert distributed.plan(mode="off", env=cluster) is None
    assert distributed.plan("h:1", 2, 0, mode="off", env={}) is None
    assert distributed.plan(mode="on", env={}) == {}  # jax detects (e.g. a Cloud TPU VM slice)
    with pytest.raises(ValueError, match="auto, on, off"):
        distributed.plan(mode="yes", env={})


@pytest.mark.parametrize(
    "env, kind",
    [
        ({**SLURM_STEP, "SLURM_NTASKS": "16"}, "slurm"),
        ({**SLURM_STEP, "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "1"}, None),  # a one-task step
        ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "16"}, None),  # the batch script itself, not srun
        ({"TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3", "TPU_WORKER_ID": "1"}, "tpu"),
        ({"TPU_PROCESS_ADDRESSES": "a:8476,b:8476"}, "tpu"),
        ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"}, "tpu"),
        ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
        ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "1"}, None),
        ({"JOBSET_NAME": "saol"}, "kubernetes"),
        ({"KUBERNETES_SERVICE_HOST": "10.1.0.1", "JAX_COORDINATOR_ADDRESS": "saol-0:1234"}, "kubernetes"),
        ({"KUBERNETES_SERVICE_HOST": "10.1.0.1"}, None),  # a single pod
    ],
    ids=["slurm", "slurm-1-task-step", "sbatch-shell", "gke-tpu", "tpu-addresses", "megascale",
         "mpi", "mpi-1", "jobset", "k8s-coordinator", "k8s-single-pod"],
)
def test_cluster_detection(env, kind):
    assert distributed.cluster_detected(env) == kind
    if kind is None:
        assert distributed.plan(env=env) is None
    else:
        assert distributed.plan(env=env) == {}  # jax reads the cluster's layout itself


@pytest.mark.parametrize(
    "extra, want",
    [
        # sbatch --ntasks-per-node=1 --gpus-per-node=8: one process with all 8 GPUs of its node.
        ({"SLURM_NTASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
          "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, {"local_device_ids": list(range(8))}),
        ({"SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_GPUS_ON_NODE": "4"},
         {"local_device_ids": [0, 1, 2, 3]}),
        # --ntasks-per-node=8, every task sees the node's GPUs: jax takes GPU SLURM_LOCALID.
        ({"SLURM_NTASKS": "16", "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
          "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, {}),
        # --gpus-per-task=1: SLURM shows each task only its own GPU, which jax numbers 0.
        ({"SLURM_NTASKS": "16", "SLURM_STEP_TASKS_PER_NODE": "8(x2)", "CUDA_VISIBLE_DEVICES": "5"},
         {"local_device_ids": [0]}),
        # Uneven layouts: this node (SLURM_NODEID=1) runs 1 task.
        ({"SLURM_NTASKS": "3", "SLURM_STEP_TASKS_PER_NODE": "2,1", "CUDA_VISIBLE_DEVICES": "0,1"},
         {"local_device_ids": [0, 1]}),
        # The user's JAX_LOCAL_DEVICE_IDS wins; CPU nodes need nothing.
        ({"SLURM_NTASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "CUDA_VISIBLE_DEVICES": "0,1",
          "JAX_LOCAL_DEVICE_IDS": "1"}, {}),
        ({"SLURM_NTASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}, {}),
    ],
    ids=["per-node", "per-node-gpus-on-node", "per-gpu", "per-gpu-bound", "uneven", "user-ids", "cpu"],
)
def test_slurm_local_devices(extra, want):
    assert distributed.plan(env={**SLURM_STEP, **extra}) == want


def test_initialize_calls_jax_only_when_planned(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert distributed.initialize(env={}) is False
    assert distributed.initialize("127.0.0.1:5", 2, 1, env={}) is True
    assert distributed.initialize(mode="on", heartbeat_timeout_s=9, env={}) is True
    assert calls == [
        {"coordinator_address": "127.0.0.1:5", "num_processes": 2, "process_id": 1,
         "heartbeat_timeout_seconds": distributed.HEARTBEAT_TIMEOUT_S},
        {"heartbeat_timeout_seconds": 9},
    ]
    with pytest.raises(ValueError, match="heartbeat timeout must be at least 1 s"):
        distributed.initialize(mode="on", heartbeat_timeout_s=0, env={})

    def undetected(**kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(distributed.jax.distributed, "initialize", undetected)
    with pytest.raises(ValueError, match="jax could not describe the cluster itself.*--coordinator_address"):
        distributed.initialize(mode="on", env={})


# ------------------------------------------------------------------ two processes vs one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], devices: int, log_path: str, cache_dir: str) -> subprocess.Popen:
    """The trainer with its output in `log_path`, sharing compiled steps through `cache_dir`."""
    with open(log_path, "w", encoding="utf-8") as log:
        return start_command(
            "train", args, devices=devices, stdout=log,
            # Compiled steps are reused by the restarted runs (the cache works across processes).
            JAX_COMPILATION_CACHE_DIR=cache_dir,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
        )


def wait_all(procs: dict[str, tuple[subprocess.Popen, str]]) -> dict[str, str]:
    """Waits for every process (killing all on a timeout); returns their outputs; asserts success."""
    deadline = time.time() + TIMEOUT_S
    try:
        for proc, _ in procs.values():
            proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass  # reported below with the logs: a killed process has a non-zero exit status
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = {}
    for name, (proc, log_path) in procs.items():
        with open(log_path, encoding="utf-8") as f:
            outputs[name] = f.read()
    for name, (proc, _) in procs.items():
        assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{outputs[name][-6000:]}"
    return outputs


def cli_args(dataset: dict, workdir: str, steps: int, *extra: str) -> list[str]:
    return smoke_args(
        dataset, workdir,
        "--config.dataset.host_shards=2",
        f"--config.num_train_steps={steps}",
        # A schedule that does not depend on the run length, so that every run compiles the
        # same train step (and the restarted processes find it in the compilation cache).
        "--config.optim.schedule=constant",
        "--config.eval_every_epochs=0.34",  # 6 steps per epoch: evaluate every 2 steps
        *extra,
    )


def start_multi(dataset: dict, tmp, steps: int, round_: str, name: str = "multi",
                devices: int = 4, *extra: str) -> dict[str, tuple[subprocess.Popen, str]]:
    """The two-process run, `devices` CPU devices each, in tmp/<name>."""
    port, procs = free_port(), {}
    for i in range(2):
        args = cli_args(dataset, str(tmp / name), steps, *extra,
                        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}")
        log = str(tmp / f"{name}_{round_}_process{i}.log")
        procs[f"{name} process {i}"] = (start(args, devices, log, str(tmp / "jax_cache")), log)
    return procs


def events(workdir: str, kind: str, up_to: int) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [e for e in map(json.loads, f) if e["event"] == kind and e["step"] <= up_to]


def checkpoint_arrays(workdir: str, step: int, parts: tuple[str, ...] = ("params", "batch_stats")
                      ) -> dict[str, np.ndarray]:
    """The `parts` of the train state in the checkpoint at `step`, as {path: array}."""
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        raw = checkpointer.restore_raw(step)
    finally:
        checkpointer.close()
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}/{key}", value)
        elif isinstance(node, (list, tuple)):  # optax states are tuples
            for index, value in enumerate(node):
                walk(f"{prefix}/{index}", value)
        elif node is not None:
            flat[prefix] = np.asarray(node)

    for part in parts:
        walk(part, raw[part])
    return flat


def assert_runs_agree(tmp, step: int) -> None:
    """tmp/multi matches tmp/single (which ran 6 steps) up to `step`: logged metrics and checkpoint."""
    multi, single = str(tmp / "multi"), str(tmp / "single")
    # The periodic evaluations read the recipe's validation split (`val` events).
    for kind in ("train", "val"):
        got, want = events(multi, kind, step), events(single, kind, step)
        assert [e["step"] for e in got] == [e["step"] for e in want] == list(range(2, step + 1, 2))
        for a, b in zip(got, want):
            for name, value in b.items():
                if name.startswith(("loss/", "val/", "train/")) and name != "train/img_per_s":
                    np.testing.assert_allclose(a[name], value, rtol=2e-5, atol=1e-6, err_msg=f"{kind} {name}")
    got, want = checkpoint_arrays(multi, step), checkpoint_arrays(single, step)
    assert got.keys() == want.keys() and len(got) > 10
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """Side by side: the two-process run and the one-process run (8 devices), 6 steps each."""
    tmp = tmp_path_factory.mktemp("distributed")
    procs = start_multi(tiny_dataset, tmp, 6, "first")
    log = str(tmp / "single.log")
    procs["single"] = (start(cli_args(tiny_dataset, str(tmp / "single"), 6), 8, log, str(tmp / "jax_cache")), log)
    return tiny_dataset, tmp, wait_all(procs)


def test_two_processes_form_one_eight_device_run(runs):
    _, _, outputs = runs
    for i in range(2):
        assert f"process {i} of 2, 4 local / 8 global cpu devices" in outputs[f"multi process {i}"]
    assert "process 0 of 1, 8 local / 8 global cpu devices" in outputs["single"]


def test_two_processes_match_one_process(runs):
    _, tmp, _ = runs
    # Written once, by process 0.
    assert [e["step"] for e in events(str(tmp / "multi"), "train", 100)] == [2, 4, 6]
    assert_runs_agree(tmp, 4)


STATE_PARTS = ("params", "batch_stats", "opt_state")


def relative_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest max|a - b| / max(1, max|b|) over the arrays: absolute for arrays of small values
    (zero-initialised BN scales, early momenta), relative for large ones."""
    return max(float(np.max(np.abs(a[k] - b[k])) / max(1.0, float(np.max(np.abs(b[k]))))) for k in b if b[k].size)


def test_restarted_processes_resume_from_the_shared_checkpoint(runs):
    dataset, tmp, _ = runs
    # The two-process run as if both processes had died after saving step 4.
    shutil.copytree(tmp / "multi", tmp / "restarted")
    shutil.rmtree(tmp / "restarted" / "checkpoints" / "6")
    outputs = wait_all(start_multi(dataset, tmp, 6, "resumed", "restarted"))
    for name, out in outputs.items():
        assert "resumed from checkpoint at step 4" in out, name
    assert [e["step"] for e in events(str(tmp / "restarted"), "train", 100)] == [2, 4, 6]

    # Same topology: the restart is exact, every leaf of the state bit-identical to the uninterrupted run.
    restarted = checkpoint_arrays(str(tmp / "restarted"), 6, STATE_PARTS)
    uninterrupted = checkpoint_arrays(str(tmp / "multi"), 6, STATE_PARTS)
    assert restarted.keys() == uninterrupted.keys() and len(restarted) > 50
    for name in uninterrupted:
        np.testing.assert_array_equal(restarted[name], uninterrupted[name], err_msg=name)

    # Across topologies (2 x 4 devices against 1 x 8) the float reductions differ in order and the
    # runs drift apart without any restart; the drift is measured on the uninterrupted runs at each
    # checkpoint. It must stay small, and the restarted run may not differ from the 1-process run
    # by more than the uninterrupted one does (here it is exactly that difference).
    single = {step: checkpoint_arrays(str(tmp / "single"), step, STATE_PARTS) for step in (2, 4, 6)}
    drift = {step: relative_difference(checkpoint_arrays(str(tmp / "multi"), step, STATE_PARTS), single[step])
             for step in (2, 4, 6)}
    assert drift[6] < 1e-3, drift  # measured: about 2e-7 at every step
    assert relative_difference(restarted, single[6]) <= drift[6], drift


def multi_args_for_signals(steps: int) -> tuple[str, ...]:
    """A long run that logs every step and saves only when told to stop."""
    return (f"--config.num_train_steps={steps}", "--config.log_every_steps=1",
            "--config.checkpoint_every_steps=100000", "--config.eval_every_epochs=100000",
            f"--heartbeat_timeout={HEARTBEAT_S}")


HEARTBEAT_S = 10


def wait_for_training(log_path: str, step: int = 3) -> None:
    """Blocks until process 0's log shows step `step` (both processes are then in the loop)."""
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        with open(log_path, encoding="utf-8") as f:
            if f"step {step}/" in f.read():
                return
        time.sleep(0.2)
    raise AssertionError(f"training did not reach step {step}: see {log_path}")


def test_sigterm_to_one_process_saves_the_same_step_on_both(tiny_dataset, tmp_path):
    procs = start_multi(tiny_dataset, tmp_path, 10_000, "first", "preempted", 2, *multi_args_for_signals(10_000))
    wait_for_training(procs["preempted process 0"][1])
    procs["preempted process 1"][0].send_signal(signal.SIGTERM)
    outputs = {}
    for name, (proc, log_path) in procs.items():
        proc.wait(timeout=TIMEOUT_S)
        with open(log_path, encoding="utf-8") as f:
            outputs[name] = f.read()
        assert proc.returncode != 0, f"{name} ran on: pre-emption exits non-zero so schedulers requeue"
    saved = [int(re.search(r"pre-empted at step (\d+); the checkpoint is saved", out).group(1))
             for out in outputs.values()]
    assert saved[0] == saved[1], saved
    assert sorted(int(d) for d in os.listdir(tmp_path / "preempted" / "checkpoints") if d.isdigit()) == [saved[0]]

    resumed = wait_all(start_multi(tiny_dataset, tmp_path, saved[0] + 2, "resumed", "preempted", 2,
                                   *multi_args_for_signals(saved[0] + 2)))
    for name, out in resumed.items():
        assert f"resumed from checkpoint at step {saved[0]}" in out, name


def test_a_lost_process_ends_the_other_within_the_heartbeat_bound(tiny_dataset, tmp_path):
    procs = start_multi(tiny_dataset, tmp_path, 10_000, "first", "lost", 2, *multi_args_for_signals(10_000))
    wait_for_training(procs["lost process 0"][1])
    procs["lost process 1"][0].kill()
    killed_at = time.time()
    survivor, log_path = procs["lost process 0"]
    try:
        survivor.wait(timeout=HEARTBEAT_S + 50)
    except subprocess.TimeoutExpired:
        survivor.kill()
        raise AssertionError(f"the survivor waited more than {HEARTBEAT_S + 50} s for its lost peer") from None
    assert survivor.returncode != 0
    with open(log_path, encoding="utf-8") as f:
        log = f.read()
    # Ours when a collective fails first; jax's own when the coordination service notices first.
    assert "another process has probably died" in log or "detected fatal errors" in log, log[-3000:]
    assert time.time() - killed_at < HEARTBEAT_S + 50


def test_partial_settings_fail_with_a_message(tmp_path):
    proc = run_command(
        "train", ["--config", "configs/fashion_mnist.py:smoke", "--workdir", str(tmp_path / "w"),
                  "--num_processes=2", "--config.num_cpu_devices=0"], timeout=300,
    )
    assert proc.returncode != 0
    assert "missing: coordinator address" in proc.stderr
    assert "Traceback" not in proc.stderr
