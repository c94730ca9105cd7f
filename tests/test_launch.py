"""launch/ scripts: syntax, shellcheck, the exact commands of their dry runs, clear argument errors."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/tpu_pod.sh", "launch/gpu_host.sh", "launch/slurm.sbatch")
CHECKED = (*SCRIPTS, "launch/carried_study.sh")
TRAIN = ["-m", "saol_jax.train"]


def run_script(script: str, *args: str, cwd: str = REPO, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DRY_RUN"))}
    environ.update(env)
    return subprocess.run(
        ["bash", os.path.join(REPO, script), *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=60,
    )


def commands(proc: subprocess.CompletedProcess) -> list[list[str]]:
    """The dry run's printed commands, one per line, split as a shell would."""
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("script", CHECKED)
def test_syntax(script):
    proc = subprocess.run(["bash", "-n", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", CHECKED)
def test_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "-s", "bash", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_the_arguments(script):
    proc = run_script(script, "--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("Usage", "--config", "--workdir", "--dry-run", "DRY_RUN=1"):
        assert word in proc.stdout, word


def test_carried_study_says_what_it_needs(tmp_path):
    proc = run_script("launch/carried_study.sh")
    assert proc.returncode == 2 and "launch/carried_study.sh CARRY_DIR OUT_DIR BUDGET_S" in proc.stdout
    proc = run_script("launch/carried_study.sh", str(tmp_path), str(tmp_path / "out"), "60",
                      "--config", "configs/target_fashion_mnist.py", "--workdir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "error: name --workdir and --results" in proc.stdout
    assert "error: name --workdir and --results" in (tmp_path / "out" / "study.log").read_text()


# ------------------------------------------------------------------ tpu_pod.sh


TPU_ARGS = ["--name", "saol-v4", "--zone", "us-central2-b", "--config", "configs/imagenet_resnet.py:hw=tpu_v4_32",
            "--workdir", "gs://bucket/runs/r50"]


# The workers' shell command that stops copy, setup and train while a trainer runs there.
GUARD = ('if pid=$(cat ~/saol_jax_train.pid 2>/dev/null) && ps -o args= -p "$pid" | grep -qF saol_jax.train; then '
         'echo "$(hostname): saol_jax.train is running (pid $pid, log ~/saol_jax_train.log): stop it first" >&2; '
         'exit 1; fi')


def ssh(command: str, project: list[str] = ()) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "saol-v4", "--zone=us-central2-b", *project,
            "--worker=all", "--command", command]


def trainer_words(remote: str) -> list[str]:
    """The trainer's command line in the train step's worker command, as the worker's shell splits it."""
    words = shlex.split(remote)
    start = words.index("nohup") + 1
    end = words.index(">>~/saol_jax_train.log", start)
    assert words[end:end + 4] == [">>~/saol_jax_train.log", "2>&1", "</dev/null", "&"]
    return words[start:end]


def test_tpu_pod_dry_run_prints_every_step(tmp_path):
    proc = run_script(
        "launch/tpu_pod.sh", *TPU_ARGS, "--steps", "create,copy,setup,train", "--project=my-proj",
        "--spot", "--data_dir", "gs://bucket/tfds", "--dry-run", "--", "--config.num_epochs=90",
        "--config.model.dtype=bfloat16", TMPDIR=str(tmp_path),
    )
    archive = str(tmp_path / "saol_jax_src.tar.gz")
    project = ["--project=my-proj"]
    got = commands(proc)
    assert got[0] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "saol-v4", "--zone=us-central2-b",
                      "--project=my-proj", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]
    assert got[1][:3] == ["tar", "-czf", archive] and got[1][-3:] == ["-C", REPO, "."]
    assert "--exclude=./.git" in got[1]
    assert got[2] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, "saol-v4:saol_jax_src.tar.gz",
                      "--zone=us-central2-b", "--project=my-proj", "--worker=all"]
    # copy, setup and train first refuse to run where a trainer started by `train` still runs.
    assert got[3] == ssh(f"{GUARD}; rm -rf ~/saol_jax && mkdir -p ~/saol_jax && tar -xzf ~/saol_jax_src.tar.gz -C "
                         "~/saol_jax", project)
    assert got[4][:-1] == ssh("", project)[:-1]
    setup = got[4][-1]
    assert setup.startswith(f"{GUARD}; cd ~/saol_jax && ") and "uv venv --python 3.11 .venv" in setup
    assert '-r requirements.txt "jax[tpu]>=0.10,<0.13"' in setup and "--no-deps -e ." in setup
    assert got[5][:-1] == ssh("", project)[:-1]
    assert trainer_words(got[5][-1]) == [
        ".venv/bin/python", *TRAIN, "--config", "configs/imagenet_resnet.py:hw=tpu_v4_32",
        "--workdir", "gs://bucket/runs/r50", "--distributed=on", "--config.dataset.data_dir=gs://bucket/tfds",
        "--config.num_epochs=90", "--config.model.dtype=bfloat16"]
    assert len(got) == 6
    assert not os.path.exists(archive)  # a dry run runs nothing
    (delete,) = commands(run_script("launch/tpu_pod.sh", *TPU_ARGS, "--steps", "delete", "--project=my-proj",
                                    "--dry-run"))
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "saol-v4", "--zone=us-central2-b",
                      "--project=my-proj", "--quiet"]


def test_tpu_pod_refuses_to_delete_the_slice_it_starts_training_on():
    # train returns once the trainers run in the background: a delete after it would stop them.
    proc = run_script("launch/tpu_pod.sh", *TPU_ARGS, "--steps", "create,copy,setup,train,delete", "--dry-run")
    assert proc.returncode != 0 and proc.stdout == ""
    assert "both train and delete" in proc.stderr and "--steps delete" in proc.stderr


def test_tpu_pod_default_steps_and_env_dry_run_match_the_flag(tmp_path):
    flag = run_script("launch/tpu_pod.sh", *TPU_ARGS, "--dry-run", TMPDIR=str(tmp_path))
    env = run_script("launch/tpu_pod.sh", *TPU_ARGS, DRY_RUN="1", TMPDIR=str(tmp_path))
    assert flag.stdout == env.stdout
    got = commands(env)
    assert [c[:5] for c in got] == [
        ["tar", "-czf", str(tmp_path / "saol_jax_src.tar.gz"), "--exclude=./.git", "--exclude=./.venv"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
    ]
    assert trainer_words(got[-1][-1])[-3:] == ["--workdir", "gs://bucket/runs/r50", "--distributed=on"]


def test_tpu_pod_quotes_arguments_for_the_workers_shell(tmp_path):
    proc = run_script("launch/tpu_pod.sh", *TPU_ARGS[:-1], "gs://bucket/my run", "--steps=train", "--dry-run",
                      "--", "--config.dataset.name=it's")
    (train,) = commands(proc)
    assert trainer_words(train[-1]) == [
        ".venv/bin/python", *TRAIN, "--config", "configs/imagenet_resnet.py:hw=tpu_v4_32",
        "--workdir", "gs://bucket/my run", "--distributed=on", "--config.dataset.name=it's"]


@pytest.mark.parametrize(
    "drop, message",
    [("--name", "missing --name"), ("--zone", "missing --zone"), ("--config", "missing --config"),
     ("--workdir", "missing --workdir")],
)
def test_tpu_pod_missing_argument(drop, message):
    args = list(TPU_ARGS)
    i = args.index(drop)
    del args[i:i + 2]
    proc = run_script("launch/tpu_pod.sh", *args, "--dry-run")
    assert proc.returncode != 0
    assert message in proc.stderr and "usage:" in proc.stderr
    assert proc.stdout == ""


def test_tpu_pod_create_alone_needs_no_config_and_bad_input_is_named():
    proc = run_script("launch/tpu_pod.sh", "--name", "n", "--zone", "z", "--steps", "create", "--dry-run")
    assert commands(proc)[0][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "n"]
    for args, message in [
        (["--steps", "create,launch"], "unknown step 'launch'"),
        (["--steps", "delete,train"], "both train and delete"),
        (["--bogus"], "unknown argument '--bogus'"),
        (["--zone"], "--zone needs a value"),
    ]:
        proc = run_script("launch/tpu_pod.sh", *TPU_ARGS, *args, "--dry-run")
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)


def test_tpu_pod_warns_about_an_unshared_workdir():
    proc = run_script("launch/tpu_pod.sh", *TPU_ARGS[:-1], "/tmp/run", "--steps", "train", "--dry-run")
    assert proc.returncode == 0 and "not a gs:// path" in proc.stderr


FAKE_TRAINER = """#!/bin/sh
echo "fake trainer: $*"
trap 'echo "fake trainer: SIGTERM, saving"; exit 0' TERM
while :; do sleep 0.1; done
"""


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_tpu_pod_train_runs_detached_on_a_worker(tmp_path, shell):
    """The train and copy steps' worker commands, run here by a worker's shell in a fake home."""
    home = tmp_path / "home"
    venv = home / "saol_jax" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(FAKE_TRAINER)
    (venv / "python").chmod(0o755)
    proc = run_script("launch/tpu_pod.sh", *TPU_ARGS, "--steps", "copy,train", "--dry-run", TMPDIR=str(tmp_path))
    copy, train = commands(proc)[2][-1], commands(proc)[3][-1]
    follow, stop = (shlex.split(line)[-1] for line in proc.stderr.splitlines() if line.startswith("  gcloud"))
    assert follow == "tail -n 100 -F ~/saol_jax_train.log" and "Follow worker 0's log:" in proc.stderr

    def on_worker(command: str) -> subprocess.CompletedProcess:
        env = {"HOME": str(home), "PATH": os.environ["PATH"]}
        return subprocess.run([shell, "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=20)

    log, pid_file = home / "saol_jax_train.log", home / "saol_jax_train.pid"
    pids = []
    try:
        started = on_worker(train)  # returns at once, the trainer left running
        assert started.returncode == 0, started.stderr
        pids.append(pid := int(pid_file.read_text()))
        assert f"training in the background (pid {pid}), log ~/saol_jax_train.log" in started.stdout
        assert wait_for(lambda: "fake trainer: -m saol_jax.train" in log.read_text())
        assert "--workdir gs://bucket/runs/r50 --distributed=on" in log.read_text()
        os.kill(pid, signal.SIGHUP)  # what a dropped SSH session sends: nohup ignores it
        time.sleep(0.5)
        assert alive(pid)
        for step in (train, copy):  # no second trainer, no replaced code under the running one
            refused = on_worker(step)
            assert refused.returncode == 1 and f"saol_jax.train is running (pid {pid}" in refused.stderr
        assert (venv / "python").exists() and int(pid_file.read_text()) == pid
        assert on_worker(stop).returncode == 0
        assert wait_for(lambda: not alive(pid))
        assert "fake trainer: SIGTERM, saving" in log.read_text()
        restarted = on_worker(train)  # the pid file of a finished trainer does not block
        assert restarted.returncode == 0, restarted.stderr
        pids.append(int(pid_file.read_text()))
        assert log.read_text().count("=== ") == 2  # the log is appended to, one header per start
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ gpu_host.sh


def test_gpu_host_dry_run():
    proc = run_script(
        "launch/gpu_host.sh", "--config", "configs/cifar_pyramidnet200.py:hw=gpu8", "--workdir", "/runs/pyr 1",
        "--data_dir=/data/tfds", "--gpus", "0,1,2,3", "--python", "/opt/venv/bin/python", "--dry-run",
        "--", "--config.num_epochs=1",
    )
    assert commands(proc) == [
        ["cd", REPO],
        ["env", "CUDA_VISIBLE_DEVICES=0,1,2,3", "/opt/venv/bin/python", *TRAIN,
         "--config", "configs/cifar_pyramidnet200.py:hw=gpu8", "--workdir", "/runs/pyr 1", "--distributed=off",
         "--config.dataset.data_dir=/data/tfds", "--config.num_epochs=1"],
    ]


def test_gpu_host_defaults():
    proc = run_script("launch/gpu_host.sh", "--config", "c.py", "--workdir", "w", DRY_RUN="1")
    python = os.path.join(REPO, ".venv/bin/python") if os.access(
        os.path.join(REPO, ".venv/bin/python"), os.X_OK) else "python3"
    assert commands(proc)[1] == [python, *TRAIN, "--config", "c.py", "--workdir", "w", "--distributed=off"]


@pytest.mark.parametrize(
    "args, message",
    [(["--workdir", "w"], "missing --config"), (["--config", "c"], "missing --workdir"),
     (["--config", "c", "--workdir", "w", "--gpus", "all"], "--gpus must look like 0,1,2,3")],
)
def test_gpu_host_bad_arguments(args, message):
    proc = run_script("launch/gpu_host.sh", *args, "--dry-run")
    assert proc.returncode != 0 and message in proc.stderr
    assert proc.stdout == ""


def jax_cuda_requirement() -> str:
    """jax[cuda12] with requirements.txt's jax version range."""
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as f:
        (version,) = (line.split("]", 1)[1].split()[0] for line in f if line.startswith("jax["))
    return f"jax[cuda12]{version}"


def fake_python(tmp_path, backend: str) -> str:
    """An interpreter whose jax reports `backend` and whose trainer only prints what it was given."""
    path = tmp_path / "python"
    path.write_text(f"""#!/bin/sh
if [ "$1" = -c ]; then echo "check CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES" >&2; echo {backend}; exit 0; fi
echo "train CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES $*"
""")
    path.chmod(0o755)
    return str(path)


def test_gpu_host_stops_when_jax_sees_no_gpu(tmp_path):
    """The real jax of this (CPU-only) environment: the check fails before anything trains."""
    workdir = tmp_path / "run"
    proc = run_script("launch/gpu_host.sh", "--config", "configs/fashion_mnist.py:smoke", "--workdir", str(workdir),
                      "--python", sys.executable, JAX_PLATFORMS="cpu")
    assert proc.returncode == 1
    assert "jax sees no GPU (its backend is 'cpu')" in proc.stderr
    assert f"{sys.executable} -m pip install -U '{jax_cuda_requirement()}'" in proc.stderr
    assert proc.stdout == "" and not workdir.exists()


def test_gpu_host_names_the_fix_when_jax_does_not_import(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named jax' >&2\nexit 1\n")
    broken.chmod(0o755)
    proc = run_script("launch/gpu_host.sh", "--config", "c.py", "--workdir", "w", "--python", str(broken))
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"could not import jax with {broken}" in proc.stderr and "bash setup.sh" in proc.stderr
    assert jax_cuda_requirement() in proc.stderr


def test_gpu_host_trains_when_jax_sees_the_gpus(tmp_path):
    python = fake_python(tmp_path, "gpu")
    proc = run_script("launch/gpu_host.sh", "--config", "c.py", "--workdir", "w", "--python", python,
                      "--gpus", "2,3", "--", "--config.num_epochs=1")
    assert proc.returncode == 0, proc.stderr
    assert "check CUDA_VISIBLE_DEVICES=2,3" in proc.stderr  # the check sees the GPUs training will use
    assert proc.stdout.strip() == ("train CUDA_VISIBLE_DEVICES=2,3 -m saol_jax.train --config c.py --workdir w "
                                   "--distributed=off --config.num_epochs=1")
    assert "error" not in proc.stderr


# ------------------------------------------------------------------ slurm.sbatch


def test_slurm_dry_run():
    proc = run_script(
        "launch/slurm.sbatch", "--config", "configs/imagenet_resnet.py", "--workdir", "/shared/runs/r50",
        "--data_dir", "/shared/tfds", "--python", "/shared/venv/bin/python", "--",
        "--config.batch_size=2048", "--config.optim.base_batch_size=256",
        DRY_RUN="1", SLURM_CPUS_PER_TASK="32", SLURM_SUBMIT_DIR=REPO,
    )
    assert commands(proc) == [
        ["cd", REPO],
        ["srun", "--kill-on-bad-exit=1", "--cpus-per-task=32", "/shared/venv/bin/python", *TRAIN,
         "--config", "configs/imagenet_resnet.py", "--workdir", "/shared/runs/r50",
         "--config.dataset.data_dir=/shared/tfds", "--config.batch_size=2048", "--config.optim.base_batch_size=256"],
    ]


def test_slurm_header_requests_signal_and_requeue():
    with open(os.path.join(REPO, "launch/slurm.sbatch"), encoding="utf-8") as f:
        directives = [line.split()[1] for line in f if line.startswith("#SBATCH")]
    assert "--signal=TERM@120" in directives and "--requeue" in directives
    assert "--ntasks-per-node=1" in directives and any(d.startswith("--gpus-per-node=") for d in directives)


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--workdir", "w"], {"DRY_RUN": "1"}, "missing --config"),
        (["--config", "c"], {"DRY_RUN": "1"}, "missing --workdir"),
        (["--config", "c", "--workdir", "w"], {}, "not inside a SLURM job"),
    ],
)
def test_slurm_bad_arguments(args, env, message):
    proc = run_script("launch/slurm.sbatch", *args, **env)
    assert proc.returncode != 0 and message in proc.stderr
    assert proc.stdout == ""


def test_slurm_must_be_submitted_from_the_repository(tmp_path):
    proc = run_script("launch/slurm.sbatch", "--config", "c", "--workdir", "w", cwd=str(tmp_path), DRY_RUN="1")
    assert proc.returncode != 0 and "submit from the repository root" in proc.stderr
