"""A backbone with its output layer(s): the module the trainer optimises."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saol_jax.models.heads import GapFcHead, MultiScaleDecoder, SaolHead

HEADS = ("gap", "gap_ms", "saol")


class Classifier(nnx.Module):
    """Backbone + GAP-FC head, plus the SAOL head when `head == 'saol'`.

    With SAOL the GAP-FC head stays as the auxiliary branch trained by
    self-distillation (docs/method.md §3.4, §6); it costs nothing extra at test time.
    With `head == 'gap_ms'` (a control, docs/method.md §8) the GAP-FC head reads
    the fused features of `gap_decoder`, SAOL's multi-scale decoder, instead of
    the last stage.
    """

    def __init__(
        self,
        backbone: nnx.Module,
        num_classes: int,
        *,
        head: str,
        saol_head: SaolHead | None = None,
        gap_decoder: MultiScaleDecoder | None = None,
        rngs: nnx.Rngs,
    ):
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if (head == "saol") != (saol_head is not None):
            raise ValueError("pass a SaolHead exactly when head == 'saol'")
        if (head == "gap_ms") != (gap_decoder is not None):
            raise ValueError("pass a MultiScaleDecoder exactly when head == 'gap_ms'")
        self.backbone = backbone
        self.num_classes = num_classes
        self.gap_decoder = gap_decoder
        gap_in = backbone.stage_channels[-1] if gap_decoder is None else gap_decoder.width
        self.gap_fc = GapFcHead(gap_in, num_classes, rngs=rngs)
        self.saol = saol_head

    def __call__(
        self, images: jax.Array, *, rngs: nnx.Rngs | None = None, with_cam: bool = False
    ) -> dict[str, jax.Array]:
        """images: [B, H, W, C] normalised float.

        Returns `gap_logits` [B, K] and, with SAOL, `log_attention`
        [B, Ho, Wo], `log_spatial` [B, Ho, Wo, K] and `log_probs` [B, K];
        `with_cam` adds the GAP-FC branch's class activation maps `cam`
        [B, Ho, Wo, K] (on the fused features for `gap_ms`: the same grid).
        A backbone that returns its own `pooled` vector (saol_jax.models.modern.
        PooledFeatures) has it classified instead of the last map's mean; its
        `cam` is still the layer on the last map, which then does not average
        to the logits.
        """
        features = self.backbone(images, rngs=rngs)
        gap_in = features[-1] if self.gap_decoder is None else self.gap_decoder(features)
        pooled = getattr(features, "pooled", None)  # the backbone's own pooling (ViT class token, ConvNeXt)
        if pooled is not None and self.gap_decoder is None:
            outputs = {"gap_logits": self.gap_fc.fc(pooled.astype(jnp.float32))}
        else:
            outputs = {"gap_logits": self.gap_fc(gap_in)}
        if with_cam:
            outputs["cam"] = self.gap_fc.cam(gap_in)
        if self.saol is not None:
            outputs.update(self.saol(features))
        return outputs
