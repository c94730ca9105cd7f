"""The `backbone=vit|convnext` option of the Fashion-MNIST recipes: the networks and grids it
picks, and a smoke training of each backbone with the SAOL head (SS + SD, every loss term)."""

from __future__ import annotations

import functools
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import fashion_mnist, target_fashion_mnist
from saol_jax.core import recipe_backbones
from saol_jax.core.config_check import check_fields
from saol_jax.models import build_model
from saol_jax.core.trainer import train_and_evaluate
from saol_jax.studies import sweep
from commands import REPO
from test_trainer import LOSS_TERMS, read_metrics


def _grid(config, image_size: int) -> tuple[int, int]:
    """The SAOL output grid of the recipe's model on `image_size` single-channel inputs (traced)."""
    model = nnx.eval_shape(lambda: build_model(config.model, num_classes=10, in_channels=1, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m: m(jnp.zeros((1, image_size, image_size, 1))), model)
    return out["log_attention"].shape[1:]


@pytest.mark.parametrize("recipe, size, grid", [(fashion_mnist, 28, (7, 7)), (target_fashion_mnist, 64, (8, 8))])
@pytest.mark.parametrize("family, name", [("vit", "vit_mini_patch4"), ("convnext", "convnext_mini")])
def test_the_option_swaps_the_network_and_keeps_the_resnets_grid(recipe, size, grid, family, name):
    resnet = recipe.get_config()
    config = recipe.get_config(f"backbone={family}")
    check_fields(config)  # the new backbone names pass the config check
    assert config.model.backbone == name
    assert config.model.head == resnet.model.head == "saol"
    factor = recipe_backbones.SCHEDULE_FACTOR[family]
    assert config.batch_size == resnet.batch_size and config.num_epochs == factor * resnet.num_epochs
    assert config.eval_every_epochs == config.num_epochs  # still one evaluation, at the end
    assert config.optim.optimizer == "adamw" and resnet.optim.optimizer == "sgd"
    assert _grid(config, size) == _grid(resnet, size) == grid


@pytest.mark.parametrize("family, name", [("vit", "vit_mini_patch4"), ("convnext", "convnext_mini")])
def test_the_recipe_settings_are_the_ones_the_committed_sweep_chose(family, name):
    """results/backbone_tuning holds the validation sweep; its choice per backbone (optimiser, and the
    ConvNeXt's layer scale and schedule) is what the recipe sets."""
    rows = sweep.settings(os.path.join(REPO, "results", "backbone_tuning"))
    picked = {row["setting"]: row for row in rows}[sweep.chosen(rows)[name]]
    config = target_fashion_mnist.get_config(f"backbone={family}")
    assert {key: functools.reduce(getattr, key.split("."), config) for key in picked["overrides"]} == \
        picked["overrides"]
    assert {f"optim.{key}" for key in recipe_backbones.OPTIM[family]} <= set(picked["overrides"])


def test_class_token_head_and_stochastic_depth_are_overridable_fields():
    config = target_fashion_mnist.get_config("backbone=vit")
    config.update_from_flattened_dict({"model.backbone_kwargs.pool": "token",
                                       "model.backbone_kwargs.drop_path_rate": 0.1})  # locked: must exist
    model = build_model(config.model, num_classes=5, in_channels=1, rngs=nnx.Rngs(0))
    assert model.backbone.pool == "token" and model.backbone.blocks[-1].drop_path.rate == pytest.approx(0.1)


def test_convnext_layer_scale_is_an_overridable_field():
    config = target_fashion_mnist.get_config("backbone=convnext")
    config.update_from_flattened_dict({"model.backbone_kwargs.layer_scale_init": 0.5})  # locked: must exist
    model = build_model(config.model, num_classes=5, in_channels=1, rngs=nnx.Rngs(0))
    assert float(model.backbone.stages[-1].blocks[-1].gamma[0]) == pytest.approx(0.5)


def test_unknown_backbone_option_is_refused():
    with pytest.raises(ValueError, match="backbone must be one of resnet, vit, convnext"):
        fashion_mnist.get_config("backbone=swin")


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_smoke_training_with_the_saol_head(family, tiny_dataset, tmp_path):
    config = fashion_mnist.get_config(f"smoke,backbone={family}")
    assert config.model.backbone.startswith(family)
    config.dataset.name = tiny_dataset["name"]
    config.dataset.data_dir = tiny_dataset["data_dir"]
    config.num_cpu_devices = 0
    results = train_and_evaluate(config, str(tmp_path))
    train_events = [e for e in read_metrics(str(tmp_path)) if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [2, 4]
    for term in LOSS_TERMS:
        assert all(np.isfinite(e[f"loss/{term}"]) for e in train_events), term
    for head in ("saol", "gap"):
        assert 0.0 <= results[f"eval/{head}_top1"] <= 1.0
