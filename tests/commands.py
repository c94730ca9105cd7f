"""Runs the project's commands (`python -m saol_jax.<command>`, <command> being `train`,
`commands.evaluate`, `studies.ablate`, ...) from the repository root, as a user would, on fake CPU
devices."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environment(devices: int, env: dict[str, str]) -> dict[str, str]:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_PLATFORMS="cpu", **env)


def start_command(command: str, args: list[str], *, devices: int = 8, stdout: int | IO = subprocess.PIPE,
                  **env: str) -> subprocess.Popen:
    """Starts `python -m saol_jax.<command> ARGS` with `devices` CPU devices and `env` added to
    the environment; standard error goes to `stdout` with the output."""
    return subprocess.Popen(
        [sys.executable, "-m", f"saol_jax.{command}", *args],
        cwd=REPO, env=_environment(devices, env), stdout=stdout, stderr=subprocess.STDOUT, text=True,
    )


def run_command(command: str, args: list[str], *, timeout: float, devices: int = 8) -> subprocess.CompletedProcess:
    """Runs `python -m saol_jax.<command> ARGS` to the end; output and errors captured apart."""
    return subprocess.run(
        [sys.executable, "-m", f"saol_jax.{command}", *args],
        cwd=REPO, env=_environment(devices, {}), capture_output=True, text=True, timeout=timeout,
    )


def smoke_args(dataset: dict, workdir: str, *extra: str) -> list[str]:
    """Flags that train the default recipe's smoke variant on a tiny test dataset, all devices used."""
    return [
        "--config", "configs/fashion_mnist.py:smoke",
        "--workdir", workdir,
        f"--config.dataset.name={dataset['name']}",
        f"--config.dataset.data_dir={dataset['data_dir']}",
        "--config.num_cpu_devices=0",
        *extra,
    ]
