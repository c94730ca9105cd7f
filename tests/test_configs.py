"""Every recipe loads with every common option, and its smoke variant trains a step."""

from __future__ import annotations

import glob
import importlib
import os

import ml_collections
import pytest

from configs import common
from saol_jax import losses
from saol_jax.trainer import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common"))
)


def load(recipe: str, arg: str | None = None) -> ml_collections.ConfigDict:
    return importlib.import_module(f"configs.{recipe}").get_config(arg)


def test_every_recipe_is_found():
    assert {"fashion_mnist", "cifar_pyramidnet200", "cifar_wrn28_10", "cifar_resnet110", "imagenet_resnet"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_docstring_is_its_manual(recipe):
    doc = importlib.import_module(f"configs.{recipe}").__doc__
    for required in ("python -m saol_jax.train", "Sized for", "Expected"):
        assert required in doc, f"{recipe}: docstring lacks {required!r}"


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("head", list(common.HEAD_LADDER))
def test_ladder_options(recipe, head):
    config = load(recipe, f"head={head}")
    assert config.model.head == ("gap" if head == "gap" else "saol")
    assert losses.loss_weights(config.loss) == common.HEAD_LADDER[head]
    assert config.loss.ss2_form == "renorm"
    with pytest.raises(AttributeError):
        config.no_such_field = 1  # locked: typos are errors


@pytest.mark.parametrize("recipe", RECIPES)
def test_hardware_variant_scales_lr_linearly(recipe):
    base = load(recipe)
    scaled = load(recipe, "hw=gpu8")
    assert scaled.batch_size == common.HARDWARE_BATCH["gpu8"]
    assert scaled.optim.base_batch_size == (base.optim.base_batch_size or base.batch_size)
    from saol_jax.optim import scaled_learning_rate

    assert scaled_learning_rate(scaled.optim, scaled.batch_size) == pytest.approx(
        base.optim.lr * scaled.batch_size / base.batch_size
    )
    large = scaled.batch_size >= common.LARGE_BATCH_FACTOR * base.batch_size
    assert scaled.optim.warmup_epochs == (
        max(base.optim.warmup_epochs, common.LARGE_BATCH_WARMUP_EPOCHS) if large else base.optim.warmup_epochs
    )


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="unknown config option"):
        load("fashion_mnist", "smokee")
    with pytest.raises(ValueError, match="head must be one of"):
        load("fashion_mnist", "head=foo")


@pytest.mark.parametrize("recipe", RECIPES)
def test_smoke_variant_trains_one_step(recipe, tiny_dataset, tmp_path):
    config = load(recipe, "smoke")
    config.dataset.name = tiny_dataset["name"]
    config.dataset.data_dir = tiny_dataset["data_dir"]
    config.dataset.eval_split = None  # the tiny dataset's own ('test')
    config.num_cpu_devices = 0
    config.num_train_steps = 1
    results = train_and_evaluate(config, str(tmp_path))
    assert results["eval/count"] == 30
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "1"))
