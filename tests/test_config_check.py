"""Mistakes a newcomer can make end in one line that says what to do, before anything compiles."""

from __future__ import annotations

import errno
import os

import orbax.checkpoint as ocp
import pytest

from saol_jax.checkpoint import CheckpointWriteError
from saol_jax.config_check import ConfigError
from saol_jax.trainer import USER_ERRORS, train_and_evaluate
from commands import run_command, smoke_args
from test_trainer import tiny_config

# (overrides, a phrase the message must contain); each row is one mistake.
BAD_CONFIGS = {
    "batch-not-divisible": ({"batch_size": 12}, "batch_size=12 must be a positive multiple of the 8 devices"),
    "eval-batch-not-divisible": ({"eval_batch_size": 20}, "eval_batch_size=20 must be a positive multiple"),
    "log-every-zero": ({"log_every_steps": 0}, "log_every_steps=0 must be at least 1"),
    "checkpoint-every-zero": ({"checkpoint_every_steps": 0}, "checkpoint_every_steps=0 must be at least 1"),
    "keep-zero": ({"keep_checkpoints": 0}, "keep_checkpoints=0 must be at least 1"),
    "mean-length": ({"dataset.mean": (0.5, 0.5)}, "dataset.mean has 2 values but tiny_shapes images have 3"),
    "std-length": ({"dataset.std": (0.2, 0.2)}, "dataset.std has 2 values"),
    "empty-eval-split": ({"dataset.eval_split": "test[30:]"}, "eval split 'test[30:]' of tiny_shapes is empty"),
    "attention-floor-one": ({"model.saol.attention_floor": 1.0}, "model.saol.attention_floor=1.0 must be in [0, 1)"),
    "grad-accum-not-divisible": ({"grad_accum_steps": 3},
                                 "batch_size=16 must be a multiple of grad_accum_steps x devices = 3 x 8"),
}


@pytest.mark.parametrize("overrides, phrase", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_in_one_line_before_training(overrides, phrase, tiny_dataset, tmp_path):
    workdir = tmp_path / "w"
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(tiny_config(tiny_dataset, **overrides), str(workdir))
    message = str(error.value)
    assert phrase in message and "\n" not in message
    assert "--config." in message or "set " in message  # says what to change
    assert not (workdir / "checkpoints").exists()


def test_unwritable_workdir_is_refused(tiny_dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"workdir .*a_file/run is not writable.*choose another --workdir"):
        train_and_evaluate(tiny_config(tiny_dataset), str(blocker / "run"))


def test_full_disk_at_save_time_is_one_line(tiny_dataset, tmp_path, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocp.CheckpointManager, "save", no_space)
    with pytest.raises(CheckpointWriteError) as error:
        train_and_evaluate(tiny_config(tiny_dataset), str(tmp_path / "w"))
    message = str(error.value)
    assert "No space left on device" in message and "--workdir" in message and "\n" not in message
    assert isinstance(error.value, USER_ERRORS)


@pytest.mark.parametrize("override, phrase", [
    ("--config.keep_checkpoints=0", "keep_checkpoints=0 must be at least 1"),
    ("--config.batch_size=12", "batch_size=12 must be a positive multiple"),
])
def test_command_line_prints_the_error_line_without_traceback(override, phrase, tiny_dataset, tmp_path):
    proc = run_command("train", smoke_args(tiny_dataset, str(tmp_path / "w"), override), timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and phrase in errors[0], output[-2000:]


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_bad_recipe_option_is_one_line(command, tmp_path):
    proc = run_command(command, ["--config", "configs/fashion_mnist.py:hw=gpu9", "--workdir", str(tmp_path)],
                       timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    assert "error: flag --config=configs/fashion_mnist.py:hw=gpu9: Error whilst parsing config file: " \
           "ValueError: hw must be one of cpu, gpu1" in output
