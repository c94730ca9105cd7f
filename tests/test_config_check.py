"""Mistakes a newcomer can make end in one line that says what to do, before anything compiles."""

from __future__ import annotations

import errno
import importlib
import os

import orbax.checkpoint as ocp
import pytest

from configs import fashion_mnist
from saol_jax.core.checkpoint import CheckpointWriteError
from saol_jax.core.config_check import CHOICES, ConfigError, check_fields
from saol_jax.core.trainer import USER_ERRORS, train_and_evaluate
from commands import REPO, run_command, smoke_args
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
    "no-length": ({"num_train_steps": -1, "num_epochs": 0.0}, "set num_epochs or num_train_steps"),
    "unknown-augmentation": ({"dataset.augment": "nope"}, "dataset.augment='nope' is not one of cifar"),
    "negative-lr": ({"optim.lr": -1.0}, "optim.lr=-1.0 must be > 0"),
    "paste-scale-not-dividing": ({"loss.paste_clean_scale": 5}, "loss.paste_clean_scale=5 must divide the image size"),
}

# One row per field: (field, bad value, the phrase of the message). Checked without dataset or devices.
BAD_FIELDS = [
    ("loss.ss2_form", "bogus", "loss.ss2_form='bogus' is not one of renorm, mass_mix, paste"),
    ("model.backbone", "nope", "model.backbone='nope' is not one of "),
    ("model.head", "nope", "model.head='nope' is not one of gap, gap_ms, saol"),
    ("model.dtype", "float16", "model.dtype='float16' is not one of float32, bfloat16"),
    ("optim.schedule", "nope", "optim.schedule='nope' is not one of step, cosine, constant"),
    ("optim.optimizer", "adam", "optim.optimizer='adam' is not one of sgd, adamw"),
    ("dataset.augment", "nope", "dataset.augment='nope' is not one of cifar, inception, none"),
    ("dataset.backend", "tfds", "dataset.backend='tfds' is not one of tfdata, grain"),
    ("optim.lr", -1.0, "optim.lr=-1.0 must be > 0"),
    ("optim.lr", 0.0, "optim.lr=0.0 must be > 0"),
    ("optim.lr", float("nan"), "optim.lr=nan must be > 0"),
    ("optim.momentum", 1.0, "optim.momentum=1.0 must be in [0, 1)"),
    ("optim.momentum", -0.1, "optim.momentum=-0.1 must be in [0, 1)"),
    ("optim.b2", 1.0, "optim.b2=1.0 must be in [0, 1)"),
    ("optim.weight_decay", -1e-4, "optim.weight_decay=-0.0001 must be >= 0"),
    ("optim.decay_factor", 0.0, "optim.decay_factor=0.0 must be in (0, 1]"),
    ("optim.decay_epochs", (10.0, -1.0), "optim.decay_epochs=-1.0 must be >= 0"),
    ("optim.warmup_epochs", -1.0, "optim.warmup_epochs=-1.0 must be >= 0"),
    ("optim.base_batch_size", -1, "optim.base_batch_size=-1 must be >= 0"),
    ("cutmix.prob", 1.5, "cutmix.prob=1.5 must be in [0, 1]"),
    ("cutmix.beta", 0.0, "cutmix.beta=0.0 must be > 0"),
    ("cutmix.group_size", -2, "cutmix.group_size=-2 must be >= 0"),
    ("dataset.color_jitter", -0.4, "dataset.color_jitter=-0.4 must be >= 0"),
    ("dataset.lighting", -0.1, "dataset.lighting=-0.1 must be >= 0"),
    ("dataset.shuffle_buffer", 0, "dataset.shuffle_buffer=0 must be >= 1"),
    ("dataset.prefetch", -1, "dataset.prefetch=-1 must be >= 0"),
    ("dataset.workers", -1, "dataset.workers=-1 must be >= 0"),
    ("dataset.host_shards", -1, "dataset.host_shards=-1 must be >= 0"),
    ("dataset.image_size", 0, "dataset.image_size=0 must be >= 1"),
    ("model.ghost_bn_size", -8, "model.ghost_bn_size=-8 must be >= 0"),
    ("model.saol.num_stages", 0, "model.saol.num_stages=0 must be >= 1"),
    ("model.saol.att_kernel", 0, "model.saol.att_kernel=0 must be >= 1"),
    ("model.saol.att_width", 0, "model.saol.att_width=0 must be >= 1"),
    ("model.saol.mid_width", 0, "model.saol.mid_width=0 must be >= 1"),
    ("loss.ss1", -1.0, "loss.ss1=-1.0 must be >= 0"),
    ("loss.gap", -0.5, "loss.gap=-0.5 must be >= 0"),
    ("loss.paste_clean_fraction", 1.5, "loss.paste_clean_fraction=1.5 must be in [0, 1]"),
    ("loss.paste_clean_fraction", -0.25, "loss.paste_clean_fraction=-0.25 must be in [0, 1]"),
    ("loss.paste_clean_scale", 0, "loss.paste_clean_scale=0 must be >= 1"),
    ("num_epochs", -1.0, "num_epochs=-1.0 must be >= 0"),
    ("profile_steps", -1, "profile_steps=-1 must be >= 0"),
    ("num_devices", -1, "num_devices=-1 must be >= 0"),
    ("num_cpu_devices", -1, "num_cpu_devices=-1 must be >= 0"),
]


@pytest.mark.parametrize("field, value, phrase", BAD_FIELDS, ids=[f"{f}={v}" for f, v, _ in BAD_FIELDS])
def test_each_field_is_checked_against_its_choices_or_range(field, value, phrase):
    config = fashion_mnist.get_config("smoke")
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError) as error:
        check_fields(config)
    message = str(error.value)
    assert message.startswith(phrase) and f"--config.{field}=" in message and "\n" not in message


def test_choices_are_the_code_constants():
    from saol_jax.core import losses, optim
    from saol_jax.data import BACKENDS, transforms
    from saol_jax.models import BACKBONES, DTYPES, HEADS

    assert CHOICES == {
        "model.backbone": tuple(sorted(BACKBONES)), "model.head": HEADS, "model.dtype": tuple(DTYPES),
        "loss.ss2_form": losses.SS2_FORMS, "optim.schedule": optim.SCHEDULES, "optim.optimizer": optim.OPTIMIZERS,
        "dataset.augment": transforms.AUGMENTATIONS, "dataset.backend": tuple(BACKENDS),
    }


RECIPES = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, "configs"))
                 if name.endswith(".py") and name != "__init__.py")


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_every_recipe_passes_the_field_checks(recipe, arg):
    check_fields(importlib.import_module(f"configs.{recipe}").get_config(arg))


@pytest.mark.parametrize("overrides, phrase", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_in_one_line_before_training(overrides, phrase, tiny_dataset, tmp_path):
    workdir = tmp_path / "w"
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(tiny_config(tiny_dataset, **overrides), str(workdir))
    message = str(error.value)
    assert phrase in message and "\n" not in message
    assert "--config." in message or "set " in message  # says what to change
    assert not workdir.exists()  # refused before anything is written


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


def test_misspelt_recipe_option_is_named_with_the_valid_ones(tmp_path):
    proc = run_command("train", ["--config", "configs/fashion_mnist.py:smok", "--workdir", str(tmp_path)],
                       timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-2000:]
    assert "unknown config option 'smok'; valid options are backbone: " in errors[0]
    assert "head: " in errors[0] and "smoke: bool" in errors[0]


@pytest.mark.parametrize("command", ["train", "studies.ablate"])
def test_bad_recipe_option_is_one_line(command, tmp_path):
    proc = run_command(command, ["--config", "configs/fashion_mnist.py:hw=gpu9", "--workdir", str(tmp_path)],
                       timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    assert "error: flag --config=configs/fashion_mnist.py:hw=gpu9: Error whilst parsing config file: " \
           "ValueError: hw must be one of cpu, gpu1" in output
