"""ViT and ConvNeXt backbones: timm's parameter counts, stage shapes, pooling, position
embeddings on other grids, stochastic depth, and the SAOL head on them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saol_jax.models import build_model
from saol_jax.models.backbones import build_backbone
from saol_jax.models.modern import DropPath, PooledFeatures
from torch_timm_reference import CONVNEXT_SIZES, VIT_SIZES, ConvNeXt, VisionTransformer, param_count

TINY_VIT = {"patch_size": 4, "embed_dim": 16, "depth": 3, "num_heads": 2, "img_size": 16}
TINY_CONVNEXT = {"depths": (1, 1, 2), "dims": (8, 16, 24), "stem_stride": 2}


def _count_with_head(name: str, num_classes: int) -> int:
    """Backbone params plus a GAP-FC head, counted under eval_shape (nothing allocated)."""
    backbone = nnx.eval_shape(lambda: build_backbone(name, rngs=nnx.Rngs(0)))
    params = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(backbone, nnx.Param)))
    return params + backbone.stage_channels[-1] * num_classes + num_classes


# timm 1.0's counts for these models (1000 classes), the same as the PyTorch reference
# built with timm's module structure gives (checked in the next test).
TIMM_COUNTS = {
    "vit_tiny_patch16": 5_717_416,
    "vit_small_patch16": 22_050_664,
    "vit_base_patch16": 86_567_656,
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
}


@pytest.mark.parametrize("name", sorted(TIMM_COUNTS))
def test_param_counts_equal_timms(name):
    if name in VIT_SIZES:
        reference = VisionTransformer(*VIT_SIZES[name])
    else:
        reference = ConvNeXt(*CONVNEXT_SIZES[name])
    assert param_count(reference) == TIMM_COUNTS[name]
    assert _count_with_head(name, 1000) == TIMM_COUNTS[name]


def _abstract(name: str, shape: tuple[int, ...], **kwargs):
    return nnx.eval_shape(lambda: build_backbone(name, rngs=nnx.Rngs(0), **kwargs)(jnp.zeros(shape)))


def test_vit_b16_stages_are_the_blocks_patch_grids():
    features = _abstract("vit_base_patch16", (2, 224, 224, 3))
    assert [f.shape for f in features] == [(2, 14, 14, 768)] * 12
    assert not isinstance(features, PooledFeatures)  # pool='avg': GAP-FC means the last grid


def test_convnext_t_stage_shapes_and_pooled_vector():
    features = _abstract("convnext_tiny", (2, 224, 224, 3))
    assert [f.shape for f in features] == [(2, 56, 56, 96), (2, 28, 28, 192), (2, 14, 14, 384), (2, 7, 7, 768)]
    assert features.pooled.shape == (2, 768)


@pytest.mark.parametrize("size, grid", [(28, 7), (64, 16)])
def test_small_variants_fit_28_to_64_pixels(size, grid):
    vit = _abstract("vit_mini_patch4", (2, size, size, 1), in_channels=1)
    assert [f.shape for f in vit] == [(2, grid, grid, 128)] * 6
    convnext = _abstract("convnext_mini", (2, 64, 64, 1), in_channels=1)
    assert [f.shape[1] for f in convnext] == [32, 16, 8]


def test_vit_class_token_pool_and_position_embeddings_on_another_grid():
    model = build_backbone("vit", rngs=nnx.Rngs(0), pool="token", **TINY_VIT)
    model.eval()
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    features = model(x)
    assert isinstance(features, PooledFeatures) and features.pooled.shape == (2, 16)
    # The final LN: the last grid and the class token have zero mean over channels.
    np.testing.assert_allclose(features[-1].mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(features.pooled.mean(-1), 0.0, atol=1e-5)
    # 24x24 inputs: a 6x6 grid, the stored 4x4 position embeddings resized to it.
    bigger = model(jax.random.normal(jax.random.key(1), (2, 24, 24, 3)))
    assert bigger[-1].shape == (2, 6, 6, 16)
    # A constant position embedding stays constant when resized: the grid then sees no position.
    model.pos_embed[...] = jnp.ones_like(model.pos_embed[...])
    tokens, _ = model._embed(jnp.zeros((1, 24, 24, 3)))
    np.testing.assert_allclose(tokens[0, 1:] - tokens[0, 1:2], 0.0, atol=1e-6)


def test_vit_without_class_token():
    model = build_backbone("vit", rngs=nnx.Rngs(0), class_token=False, **TINY_VIT)
    assert model.pos_embed.shape == (1, 16, 16)
    assert model(jnp.zeros((1, 16, 16, 3)))[-1].shape == (1, 4, 4, 16)
    with pytest.raises(ValueError, match="pool='token' needs class_token"):
        build_backbone("vit", rngs=nnx.Rngs(0), class_token=False, pool="token", **TINY_VIT)


def test_convnext_layer_scale_starts_at_timms_value_or_the_option():
    def gammas(**kwargs) -> set[float]:
        model = build_backbone("convnext", rngs=nnx.Rngs(0), **TINY_CONVNEXT, **kwargs)
        return {float(v) for stage in model.stages for block in stage.blocks for v in np.asarray(block.gamma[...])}

    assert gammas() == {np.float32(1e-6)}
    assert gammas(layer_scale_init=0.1) == {np.float32(0.1)}


def test_drop_path_drops_whole_samples_in_training_only():
    layer = DropPath(0.5)
    x = jnp.ones((64, 3, 2))
    y = layer(x, rngs=nnx.Rngs(dropout=0))
    per_sample = np.asarray(y[:, 0, 0])
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert np.all(np.asarray(y) == per_sample[:, None, None])
    layer.deterministic = True
    np.testing.assert_array_equal(layer(x), x)
    with pytest.raises(ValueError, match="needs `rngs`"):
        DropPath(0.1)(x)


@pytest.mark.parametrize("backbone, kwargs", [("vit", TINY_VIT), ("convnext", TINY_CONVNEXT)])
def test_saol_head_on_the_new_backbones(backbone, kwargs):
    import ml_collections

    config = ml_collections.ConfigDict({
        "backbone": backbone, "backbone_kwargs": {**kwargs, "drop_path_rate": 0.1}, "head": "saol",
        "dtype": "float32", "ghost_bn_size": 0,
        "saol": {"num_stages": 2, "att_kernel": 1, "att_width": 8, "mid_width": 8, "attention_floor": 0.0},
    })
    model = build_model(config, num_classes=5, in_channels=3, rngs=nnx.Rngs(0))
    out = model(jnp.ones((2, 16, 16, 3)), rngs=nnx.Rngs(dropout=1))
    grid = 4 if backbone == "vit" else 2  # ViT: 16 / patch 4; ConvNeXt: 16 / (2 * 2 * 2)
    assert out["log_attention"].shape == (2, grid, grid)
    assert out["log_probs"].shape == out["gap_logits"].shape == (2, 5)
    np.testing.assert_allclose(jnp.exp(out["log_probs"]).sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(out["gap_logits"])))


@pytest.mark.parametrize("backbone, kwargs", [("vit", {**TINY_VIT, "pool": "token"}), ("convnext", TINY_CONVNEXT)])
def test_bfloat16_activations_give_float32_outputs(backbone, kwargs):
    import ml_collections

    config = ml_collections.ConfigDict({
        "backbone": backbone, "backbone_kwargs": kwargs, "head": "saol", "dtype": "bfloat16", "ghost_bn_size": 0,
        "saol": {"num_stages": 2, "att_kernel": 1, "att_width": 8, "mid_width": 8, "attention_floor": 0.0},
    })
    model = nnx.eval_shape(lambda: build_model(config, num_classes=5, in_channels=3, rngs=nnx.Rngs(0)))
    model.eval()
    images = jnp.ones((2, 16, 16, 3), jnp.bfloat16)
    features = nnx.eval_shape(lambda m: m.backbone(images), model)
    assert features[-1].dtype == jnp.bfloat16
    out = nnx.eval_shape(lambda m: m(images), model)
    for name in ("gap_logits", "log_probs", "log_attention"):
        assert out[name].dtype == jnp.float32, name
