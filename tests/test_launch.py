"""launch/ scripts: syntax, shellcheck, the exact commands of their dry runs, clear argument errors."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/tpu_pod.sh", "launch/gpu_host.sh", "launch/slurm.sbatch")
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


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax(script):
    proc = subprocess.run(["bash", "-n", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
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


# ------------------------------------------------------------------ tpu_pod.sh


TPU_ARGS = ["--name", "saol-v4", "--zone", "us-central2-b", "--config", "configs/imagenet_resnet.py:hw=tpu_v4_32",
            "--workdir", "gs://bucket/runs/r50"]


def ssh(command: str, project: list[str] = ()) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "saol-v4", "--zone=us-central2-b", *project,
            "--worker=all", "--command", command]


def test_tpu_pod_dry_run_prints_every_step(tmp_path):
    proc = run_script(
        "launch/tpu_pod.sh", *TPU_ARGS, "--steps", "create,copy,setup,train,delete", "--project=my-proj",
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
    assert got[3] == ssh("rm -rf ~/saol_jax && mkdir -p ~/saol_jax && tar -xzf ~/saol_jax_src.tar.gz -C ~/saol_jax",
                         project)
    assert got[4][:-1] == ssh("", project)[:-1]
    setup = got[4][-1]
    assert setup.startswith("cd ~/saol_jax && ") and "uv venv --python 3.11 .venv" in setup
    assert '-r requirements.txt "jax[tpu]>=0.10,<0.13"' in setup and "--no-deps -e ." in setup
    assert got[5] == ssh(
        "cd ~/saol_jax && .venv/bin/python -m saol_jax.train --config configs/imagenet_resnet.py:hw=tpu_v4_32 "
        "--workdir gs://bucket/runs/r50 --distributed=on --config.dataset.data_dir=gs://bucket/tfds "
        "--config.num_epochs=90 --config.model.dtype=bfloat16", project)
    assert got[6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "saol-v4", "--zone=us-central2-b",
                      "--project=my-proj", "--quiet"]
    assert len(got) == 7
    assert not os.path.exists(archive)  # a dry run runs nothing


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
    assert got[-1][-1].endswith("--workdir gs://bucket/runs/r50 --distributed=on")


def test_tpu_pod_quotes_arguments_for_the_workers_shell(tmp_path):
    proc = run_script("launch/tpu_pod.sh", *TPU_ARGS[:-1], "gs://bucket/my run", "--steps=train", "--dry-run",
                      "--", "--config.dataset.name=it's")
    (train,) = commands(proc)
    remote = shlex.split(train[-1])  # what the worker's shell sees
    assert remote[:3] == ["cd", "~/saol_jax", "&&"]
    assert remote[3:] == [".venv/bin/python", *TRAIN, "--config", "configs/imagenet_resnet.py:hw=tpu_v4_32",
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
        (["--bogus"], "unknown argument '--bogus'"),
        (["--zone"], "--zone needs a value"),
    ]:
        proc = run_script("launch/tpu_pod.sh", *TPU_ARGS, *args, "--dry-run")
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)


def test_tpu_pod_warns_about_an_unshared_workdir():
    proc = run_script("launch/tpu_pod.sh", *TPU_ARGS[:-1], "/tmp/run", "--steps", "train", "--dry-run")
    assert proc.returncode == 0 and "not a gs:// path" in proc.stderr


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
