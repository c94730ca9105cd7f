"""Every recipe loads with every common option, and its smoke variant trains a step."""

from __future__ import annotations

import glob
import importlib
import os

import ml_collections
import pytest

from saol_jax.core import losses
from saol_jax.core.ladder import BASE_LOSS, HEAD_LADDER, MODEL_HEADS
from saol_jax.core.options import Option, parse_options
from saol_jax.core.recipe import HARDWARE, LARGE_BATCH_FACTOR, LARGE_BATCH_WARMUP_EPOCHS, base_config
from saol_jax.core.trainer import train_and_evaluate
from saol_jax.data import carved_splits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common"))
)


def load(recipe: str, arg: str | None = None) -> ml_collections.ConfigDict:
    return importlib.import_module(f"configs.{recipe}").get_config(arg)


def test_every_recipe_is_found():
    assert {"fashion_mnist", "cifar_pyramidnet200", "cifar_wrn28_10", "cifar_resnet110", "imagenet_resnet",
            "target_fashion_mnist"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_docstring_is_its_manual(recipe):
    doc = importlib.import_module(f"configs.{recipe}").__doc__
    for required in ("python -m saol_jax.train", "Sized for", "Expected"):
        assert required in doc, f"{recipe}: docstring lacks {required!r}"


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("head", list(HEAD_LADDER))
def test_ladder_options(recipe, head):
    config = load(recipe, f"head={head}")
    assert config.model.head == MODEL_HEADS[head]
    assert losses.loss_weights(config.loss) == HEAD_LADDER[head]
    assert config.loss.ss2_form == "renorm"  # chosen on validation (docs/method.md §5.2)
    with pytest.raises(AttributeError):
        config.no_such_field = 1  # locked: typos are errors


@pytest.mark.parametrize("recipe", RECIPES)
def test_hardware_variant_scales_lr_linearly(recipe):
    base = load(recipe)
    scaled = load(recipe, "hw=gpu8")
    assert scaled.batch_size == HARDWARE["gpu8"].batch
    assert scaled.optim.base_batch_size == (base.optim.base_batch_size or base.batch_size)
    from saol_jax.core.optim import scaled_learning_rate

    assert scaled_learning_rate(scaled.optim, scaled.batch_size) == pytest.approx(
        base.optim.lr * scaled.batch_size / base.batch_size
    )
    large = scaled.batch_size >= LARGE_BATCH_FACTOR * base.batch_size
    assert scaled.optim.warmup_epochs == (
        max(base.optim.warmup_epochs, LARGE_BATCH_WARMUP_EPOCHS) if large else base.optim.warmup_epochs
    )


def test_the_base_loss_is_the_one_default_of_its_fields():
    # The recipes' loss section is ladder.BASE_LOSS, which code without ml_collections (benchmarks) reads.
    assert base_config().loss.to_dict() == BASE_LOSS
    assert BASE_LOSS["ss2_form"] in losses.SS2_FORMS


def test_gap_ms_rung_trains_and_localises_with_its_cam(tiny_boxed_dataset, tmp_path):
    config = load("fashion_mnist", "smoke,head=gap_ms")
    config.dataset.name = tiny_boxed_dataset["name"]
    config.dataset.data_dir = tiny_boxed_dataset["data_dir"]
    config.dataset.eval_split = None
    config.num_cpu_devices = 0
    config.num_train_steps = 1
    results = train_and_evaluate(config, str(tmp_path))
    located = {key for key in results if key.startswith("eval/loc_")}
    assert "eval/loc_cam_pointing" in located and "eval/gap_top1" in results
    # No attention: neither SAOL's outputs nor its maps.
    assert "eval/saol_top1" not in results and not [key for key in located if "attention" in key]


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="unknown config option"):
        load("fashion_mnist", "smokee")
    with pytest.raises(ValueError, match="head must be one of"):
        load("fashion_mnist", "head=foo")


TOY_OPTIONS = {"smoke": Option(False), "steps": Option(3), "lr": Option(0.1), "head": Option("saol", ("gap", "saol"))}


def test_options_are_typed():
    assert parse_options(None, TOY_OPTIONS).to_dict() == {"smoke": False, "steps": 3, "lr": 0.1, "head": "saol"}
    options = parse_options("smoke,steps=7,lr=0.5,head=gap", TOY_OPTIONS)
    assert (options.smoke, options.steps, options.lr, options.head) == (True, 7, 0.5, "gap")
    assert parse_options("smoke=false", TOY_OPTIONS).smoke is False
    assert load("cifar_pyramidnet200", "shakedrop").model.backbone_kwargs.shakedrop == 0.5
    assert load("cifar_pyramidnet200", "shakedrop=false").model.backbone_kwargs.shakedrop == 0.0


@pytest.mark.parametrize(
    "arg, message",
    [
        ("steps=many", "option steps is int, got 'many'"),
        ("lr=fast", "option lr is float, got 'fast'"),
        ("smoke=maybe", "option smoke is a bool"),
        ("steps", "option steps needs a value"),
        ("head=foo", "head must be one of gap, saol, got 'foo'"),
    ],
)
def test_bad_option_values_are_named(arg, message):
    with pytest.raises(ValueError, match=message):
        parse_options(arg, TOY_OPTIONS)


def test_unknown_option_lists_every_option_with_its_type():
    with pytest.raises(ValueError) as error:
        load("imagenet_resnet", "archh=resnet50")
    text = str(error.value)
    assert "unknown config option 'archh'" in text
    assert "arch: str, one of resnet50|resnet101|resnet152 (default 'resnet50')" in text
    assert "smoke: bool (default False)" in text
    assert "head: str, one of gap|gap_ms|saol|saol_ss|saol_ss_sd" in text


@pytest.mark.parametrize("recipe", RECIPES)
def test_smoke_variant_trains_one_step(recipe, tiny_dataset, tmp_path):
    config = load(recipe, "smoke")
    config.dataset.name = tiny_dataset["name"]
    config.dataset.data_dir = tiny_dataset["data_dir"]
    config.dataset.eval_split = None  # the tiny dataset's own ('test')
    if config.dataset.validation_split == "validation":  # a benchmark's own split: the tiny one's carve
        config.dataset.train_split, config.dataset.validation_split = carved_splits(10)
    config.num_cpu_devices = 0
    config.num_train_steps = 1
    results = train_and_evaluate(config, str(tmp_path))
    assert results["eval/count"] == 30
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "1"))


@pytest.mark.parametrize("hw, batch, devices", [
    ("tpu_v4_8", 512, 4), ("tpu_v4_32", 2048, 16), ("tpu_v4_128", 4096, 64),
    # v5e (v5litepod-N): one 16 GiB chip per device, 64 images each.
    ("tpu_v5e_8", 512, 8), ("tpu_v5e_16", 1024, 16), ("tpu_v5e_32", 2048, 32), ("tpu_v5e_64", 4096, 64),
    # v6e (v6e-N): one 32 GiB chip per device, 128 images each as on v4.
    ("tpu_v6e_8", 1024, 8), ("tpu_v6e_16", 2048, 16), ("tpu_v6e_32", 4096, 32),
])
def test_tpu_slice_variants(hw, batch, devices):
    assert HARDWARE[hw] == (batch, devices)
    config = load("imagenet_resnet", f"hw={hw}")
    assert config.batch_size == batch
    assert config.optim.base_batch_size == 256  # the recipe's batch: lr = 0.1 * batch / 256
    assert config.optim.warmup_epochs == (LARGE_BATCH_WARMUP_EPOCHS if batch >= LARGE_BATCH_FACTOR * 256 else 0.0)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("hw", list(HARDWARE))
def test_hardware_variant_batches_divide_by_its_devices(recipe, hw):
    config = load(recipe, f"hw={hw}")
    devices = HARDWARE[hw].devices
    assert config.batch_size % devices == 0 and config.eval_batch_size % devices == 0, (
        config.batch_size, config.eval_batch_size, devices)
