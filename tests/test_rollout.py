"""A ViT's attention probabilities and attention rollout, on matrices whose answer is known."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saol_jax.core.rollout import attention_rollout, rollout_map
from saol_jax.models.backbones import build_backbone
from saol_jax.models.vit import Attention

TINY_VIT = {"patch_size": 4, "embed_dim": 16, "depth": 3, "num_heads": 2, "img_size": 16}


def test_attention_weights_times_values_are_the_fused_attention():
    attn = Attention(16, 4, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 16))
    weights = attn.weights(x)
    assert weights.shape == (2, 4, 5, 5) and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    queries, keys, values = attn.heads(x)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, values)
    np.testing.assert_allclose(mixed, jax.nn.dot_product_attention(queries, keys, values), atol=1e-5)
    np.testing.assert_allclose(attn.proj(mixed.reshape(x.shape)), attn(x), atol=1e-5)


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_vit_gives_one_attention_per_block_over_all_tokens(pool):
    model = build_backbone("vit", rngs=nnx.Rngs(0), pool=pool, **TINY_VIT)
    model.eval()
    weights = model.attention_weights(jax.random.normal(jax.random.key(0), (2, 20, 12, 3)))
    # A 5x3 patch grid plus the class token.
    assert [w.shape for w in weights] == [(2, 2, 16, 16)] * 3
    assert not np.allclose(weights[0], weights[1])


def _uniform(batch: int, heads: int, tokens: int) -> jax.Array:
    return jnp.full((batch, heads, tokens, tokens), 1.0 / tokens)


def _random_attention(key: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.nn.softmax(jax.random.normal(jax.random.key(key), shape), axis=-1)


def test_identity_attention_rolls_out_to_the_identity():
    eye = jnp.broadcast_to(jnp.eye(4), (2, 3, 4, 4))
    np.testing.assert_allclose(attention_rollout([eye, eye, eye]), np.broadcast_to(np.eye(4), (2, 4, 4)))


def test_uniform_attention_without_residual_gives_uniform_rows():
    rollout = attention_rollout([_uniform(1, 2, 5), _uniform(1, 2, 5)], residual=0.0)
    np.testing.assert_allclose(rollout, np.full((1, 5, 5), 0.2), rtol=1e-6)


def test_two_blocks_are_multiplied_first_block_first():
    first, second = _random_attention(0, (2, 3, 4, 4)), _random_attention(1, (2, 4, 4, 4))
    eye = np.eye(4)

    def mixed(block: jax.Array) -> np.ndarray:
        matrix = 0.7 * np.asarray(block).mean(axis=1) + 0.3 * eye
        return matrix / matrix.sum(-1, keepdims=True)

    rollout = attention_rollout([first, second], residual=0.3)
    np.testing.assert_allclose(rollout, mixed(second) @ mixed(first), rtol=1e-5)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, rtol=1e-5)


def test_token_pool_reads_the_class_token_row_and_avg_the_patch_rows():
    # 1 class token + a 1x2 grid: the class token draws mostly from patch 2, patch 1 half from the
    # class token and half from itself, patch 2 only from itself.
    rollout = jnp.asarray([[[0.2, 0.2, 0.6], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    # The class token's patch columns (0.2, 0.6), renormalised.
    np.testing.assert_allclose(rollout_map(rollout, prefix=1, grid_hw=(1, 2), pool="token"), [[[0.25, 0.75]]])
    # The patch rows' patch columns (0.5, 0) and (0, 1): mean (0.25, 0.5), renormalised.
    np.testing.assert_allclose(rollout_map(rollout, prefix=1, grid_hw=(1, 2), pool="avg"), [[[1 / 3, 2 / 3]]],
                               rtol=1e-6)


def test_maps_sum_to_one_on_the_patch_grid():
    weights = [_random_attention(k, (3, 2, 1 + 2 * 3, 1 + 2 * 3)) for k in range(4)]
    for pool in ("token", "avg"):
        maps = rollout_map(attention_rollout(weights), prefix=1, grid_hw=(2, 3), pool=pool)
        assert maps.shape == (3, 2, 3)
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-6)


@pytest.mark.parametrize("weights, residual, message", [
    ([], 0.5, "at least one block"),
    ([_uniform(1, 2, 3)], 1.5, "residual must be in"),
    ([jnp.ones((1, 3, 3))], 0.5, r"\[B, heads, N, N\]"),
    ([_uniform(1, 2, 3), _uniform(1, 2, 4)], 0.5, "same B and N"),
])
def test_rollout_refuses_bad_arguments(weights, residual, message):
    with pytest.raises(ValueError, match=message):
        attention_rollout(weights, residual)


@pytest.mark.parametrize("kwargs, message", [
    ({"prefix": 1, "grid_hw": (2, 2), "pool": "max"}, "pool must be one of"),
    ({"prefix": -1, "grid_hw": (2, 2), "pool": "avg"}, "prefix must be"),
    ({"prefix": 0, "grid_hw": (2, 2), "pool": "token"}, "needs prefix >= 1"),
    ({"prefix": 0, "grid_hw": (2, 2), "pool": "avg"}, r"must be \[B, 4, 4\]"),
])
def test_rollout_map_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rollout_map(jnp.full((1, 5, 5), 0.2), **kwargs)
