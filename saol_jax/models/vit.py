"""Vision Transformer (Dosovitskiy et al. 2021) as a SAOL backbone, laid out like timm's
`VisionTransformer` so that timm's weights load (saol_jax.commands.convert_timm).

Patch embedding (conv p x p, stride p), an optional class token, learned
position embeddings, pre-norm blocks (LN - multi-head self-attention -
residual, LN - MLP x4 - residual), a final LN. The position embeddings are
stored for `img_size` and resized (bicubic) to the patch grid of any other
input size, so one checkpoint serves every resolution.

For SAOL every block is a "stage": the backbone returns the patch-token grid
[B, H/p, W/p, D] after each block, so the head's decoder fuses the last S
blocks (one resolution) and its attention reads the last grid, taken after
the final LN. GAP-FC (`pool='avg'`) is the mean of those final patch
tokens; `pool='token'` classifies the class token after the final LN, as
timm's `vit_*_patch16_224` heads do.

`VisionTransformer.attention_weights` gives each block's attention
probabilities, which saol_jax.core.rollout turns into an attention rollout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.modern import WEIGHT_INIT, DropPath, Mlp, PooledFeatures, drop_path_rates, layer_norm, linear

POOLS = ("avg", "token")


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection (timm's head-major layout)."""

    def __init__(self, dim: int, num_heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
        self.proj = linear(dim, dim, dtype=dtype, rngs=rngs)

    def heads(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x: [B, N, D] -> queries, keys, values, each [B, N, heads, D / heads]."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, N, D] -> [B, N, D]."""
        out = jax.nn.dot_product_attention(*self.heads(x))
        return self.proj(out.reshape(x.shape))

    def weights(self, x: jax.Array) -> jax.Array:
        """x: [B, N, D] -> the attention probabilities softmax(q kᵀ / √d) [B, heads, N, N], float32.

        Row i is query token i's distribution over the keys; the fused
        `__call__` never materialises it, attention rollout reads it.
        """
        queries, keys, _ = self.heads(x)
        queries, keys = queries.astype(jnp.float32), keys.astype(jnp.float32)
        logits = jnp.einsum("bqhd,bkhd->bhqk", queries, keys) / jnp.sqrt(float(queries.shape[-1]))
        return jax.nn.softmax(logits, axis=-1)


class Block(nnx.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)), each branch under stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, *,
                 dtype: jnp.dtype, rngs: nnx.Rngs):
        self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
        self.attn = Attention(dim, num_heads, dtype=dtype, rngs=rngs)
        self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)
        self.drop_path = DropPath(drop_path)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = x + self.drop_path(self.attn(self.norm1(x)), rngs=rngs)
        return x + self.drop_path(self.mlp(self.norm2(x)), rngs=rngs)


def resize_pos_embed(grid_embed: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
    """Position embeddings [h, w, D] resized bicubically to [H, W, D] (identity when equal)."""
    if grid_embed.shape[:2] == tuple(grid_hw):
        return grid_embed
    return jax.image.resize(grid_embed, (*grid_hw, grid_embed.shape[-1]), method="bicubic")


class VisionTransformer(nnx.Module):
    """ViT with `depth` blocks of width `embed_dim`; Ti/16 = (192, 12, 3), S/16 = (384, 12, 6),
    B/16 = (768, 12, 12) with patch 16 at 224; the returned stages are the blocks' patch grids."""

    def __init__(
        self,
        *,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        img_size: int = 224,
        mlp_ratio: float = 4.0,
        class_token: bool = True,
        pool: str = "avg",
        drop_path_rate: float = 0.0,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if pool == "token" and not class_token:
            raise ValueError("pool='token' needs class_token=True")
        grid = img_size // patch_size
        self.pool = pool
        self.stage_channels = (embed_dim,) * depth
        self.stage_reductions = (patch_size,) * depth
        self.patch_embed = nnx.Conv(
            in_channels, embed_dim, (patch_size, patch_size), strides=(patch_size, patch_size),
            padding="VALID", dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
        )
        self.cls_token = (
            nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, embed_dim), jnp.float32)) if class_token else None
        )
        num_tokens = grid * grid + int(class_token)
        self.pos_embed = nnx.Param(WEIGHT_INIT(rngs.params(), (1, num_tokens, embed_dim), jnp.float32))
        self.grid = grid
        self.blocks = nnx.List([
            Block(embed_dim, num_heads, mlp_ratio, rate, dtype=dtype, rngs=rngs)
            for rate in drop_path_rates(drop_path_rate, depth)
        ])
        self.norm = layer_norm(embed_dim, dtype=dtype, rngs=rngs)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: 1 with a class token, else 0."""
        return 0 if self.cls_token is None else 1

    def _embed(self, x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """Images [B, H, W, C] -> tokens [B, T, D] with positions added (class token first)."""
        patches = self.patch_embed(x)
        batch, gh, gw, dim = patches.shape
        pos = self.pos_embed[...].astype(patches.dtype)
        prefix = self.num_prefix_tokens
        grid_pos = resize_pos_embed(pos[0, prefix:].reshape(self.grid, self.grid, dim), (gh, gw))
        tokens = patches.reshape(batch, gh * gw, dim) + grid_pos.reshape(1, gh * gw, dim)
        if self.cls_token is not None:
            cls = self.cls_token[...].astype(patches.dtype) + pos[:, :1]
            tokens = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, dim)), tokens], axis=1)
        return tokens, (gh, gw)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        """x: [B, H, W, C_in] -> one grid [B, H/p, W/p, D] per block, the last after the final LN.

        With `pool='token'` the result is a PooledFeatures whose `pooled` is the
        normalised class token [B, D].
        """
        tokens, (gh, gw) = self._embed(x)
        prefix = self.num_prefix_tokens
        batch, dim = tokens.shape[0], tokens.shape[-1]
        grids = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, rngs=rngs)
            if index == len(self.blocks) - 1:
                tokens = self.norm(tokens)
            grids.append(tokens[:, prefix:].reshape(batch, gh, gw, dim))
        if self.pool == "token":
            return PooledFeatures(grids, tokens[:, 0])
        return grids

    def attention_weights(self, x: jax.Array) -> list[jax.Array]:
        """x: [B, H, W, C_in] -> each block's attention probabilities [B, heads, T, T], float32.

        T = prefix + (H/p)(W/p) tokens, the class token (if any) first, then the
        patches row by row. The eval-mode pass (no stochastic depth), for
        attention rollout (saol_jax.core.rollout).
        """
        tokens, _ = self._embed(x)
        weights = []
        for block in self.blocks:
            weights.append(block.attn.weights(block.norm1(tokens)))
            tokens = block(tokens)
        return weights
