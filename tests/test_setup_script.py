"""setup.sh on machines unlike the development one: it names the fix instead of failing obscurely."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_setup(tmp_path, python: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(REPO, "setup.sh")], cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          env=dict(os.environ, PYTHON=python, VENV=str(tmp_path / "venv")))


def test_too_old_python_is_refused_with_the_fix(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text('#!/bin/sh\nif [ "$1" = -V ]; then echo "Python 3.10.12"; exit 0; fi\nexit 1\n')
    fake.chmod(0o755)
    result = run_setup(tmp_path, str(fake))
    assert result.returncode != 0
    assert "Python 3.10.12 is too old" in result.stdout and "PYTHON=python3.11 bash setup.sh" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_missing_python_is_refused_with_the_fix(tmp_path):
    result = run_setup(tmp_path, "no-such-python3")
    assert result.returncode != 0
    assert "no-such-python3 not found" in result.stdout and "PYTHON=python3.11" in result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_setup_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", os.path.join(REPO, "setup.sh")], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert result.returncode == 0, result.stdout
