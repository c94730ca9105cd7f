"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
where a ViT's output tokens draw from its input patches, the usual picture of where a ViT looks.

Each block's attention, averaged over heads, is mixed with the identity for
the residual connection and its rows renormalised; the blocks' matrices are
multiplied from the first block to the last, so row i of the rollout is how
much the last block's token i takes from each input token. The map of an
image reads the rows the classifier reads: the class token's with
`pool='token'`, the mean of the patch tokens' rows with `pool='avg'`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from saol_jax.models.vit import POOLS


def attention_rollout(weights: Sequence[jax.Array], residual: float = 0.5) -> jax.Array:
    """Per-block attention probabilities [B, heads, N, N] (first block first) -> rollout [B, N, N].

    Block l contributes Â_l = rows-renormalised (1 - residual) mean_heads(A_l)
    + residual I; the rollout is Â_L ... Â_2 Â_1, each row summing to 1.
    """
    if not weights:
        raise ValueError("attention_rollout needs the attention of at least one block")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    shape = weights[0].shape
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"each block's attention must be [B, heads, N, N], got {shape}")
    if any(w.shape[:1] + w.shape[2:] != shape[:1] + shape[2:] for w in weights):
        raise ValueError(f"every block's attention must be [B, heads, N, N] with the same B and N, got "
                         f"{[tuple(w.shape) for w in weights]}")
    identity = jnp.eye(shape[-1], dtype=jnp.float32)
    rollout = identity
    for block in weights:
        mixed = (1.0 - residual) * block.astype(jnp.float32).mean(axis=1) + residual * identity
        rollout = (mixed / mixed.sum(axis=-1, keepdims=True)) @ rollout
    return rollout


def rollout_map(rollout: jax.Array, *, prefix: int, grid_hw: tuple[int, int], pool: str) -> jax.Array:
    """Rollout [B, N, N] -> [B, gh, gw] over the patch grid, each image's map summing to 1.

    N = prefix + gh * gw: `prefix` tokens (the class token) before the patches,
    row by row. `pool='token'` reads the class token's row (the first), `pool='avg'`
    the mean of the patch tokens' rows, as mean pooling reads all of them; only
    the patch columns are kept, then renormalised.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if prefix < 0:
        raise ValueError(f"prefix must be >= 0, got {prefix}")
    if pool == "token" and prefix < 1:
        raise ValueError("pool='token' reads the class token's row: it needs prefix >= 1")
    gh, gw = grid_hw
    tokens = prefix + gh * gw
    if rollout.ndim != 3 or rollout.shape[1:] != (tokens, tokens):
        raise ValueError(f"rollout must be [B, {tokens}, {tokens}] for prefix {prefix} and grid {gh}x{gw}, "
                         f"got {tuple(rollout.shape)}")
    patches = rollout[:, 0, prefix:] if pool == "token" else rollout[:, prefix:, prefix:].mean(axis=1)
    patches = patches / patches.sum(axis=-1, keepdims=True)
    return patches.reshape(-1, gh, gw)
