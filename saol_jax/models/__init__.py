"""Model construction from a config: backbone registry, heads, classifier, input normalisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
from flax import nnx

from saol_jax.models.backbones import BACKBONES, build_backbone
from saol_jax.models.classifier import HEADS, Classifier
from saol_jax.models.heads import GapFcHead, MultiScaleDecoder, SaolHead
from saol_jax.models.inputs import normalise

if TYPE_CHECKING:  # configs are ConfigDicts; building a model needs only attribute access
    import ml_collections

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

__all__ = [
    "BACKBONES",
    "Classifier",
    "DTYPES",
    "GapFcHead",
    "HEADS",
    "MultiScaleDecoder",
    "SaolHead",
    "build_backbone",
    "build_model",
    "normalise",
]


def build_model(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
) -> Classifier:
    """Builds the classifier described by `config.model` (a ConfigDict or any object with its fields).

    Fields: `backbone` (a name in BACKBONES), `backbone_kwargs`
    (architecture overrides), `head` (one of HEADS), `saol` (num_stages,
    att_kernel, att_width, mid_width, attention_floor; `gap_ms` reads num_stages and
    mid_width), `dtype` ('float32' or 'bfloat16') and
    `ghost_bn_size` (0 = BatchNorm statistics over the whole global batch).
    """
    if model_config.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {model_config.dtype!r}")
    dtype = DTYPES[model_config.dtype]
    ghost_size = model_config.ghost_bn_size
    backbone = build_backbone(
        model_config.backbone,
        in_channels=in_channels,
        dtype=dtype,
        ghost_size=ghost_size,
        rngs=rngs,
        **dict(model_config.backbone_kwargs),
    )
    saol_head = gap_decoder = None
    if model_config.head == "gap_ms":  # SAOL's decoder, with SAOL's stage count and width
        gap_decoder = MultiScaleDecoder(
            backbone.stage_channels,
            num_stages=model_config.saol["num_stages"],
            mid_width=model_config.saol["mid_width"],
            dtype=dtype,
            ghost_size=ghost_size,
            rngs=rngs,
        )
    if model_config.head == "saol":
        saol_head = SaolHead(
            backbone.stage_channels,
            num_classes,
            dtype=dtype,
            ghost_size=ghost_size,
            rngs=rngs,
            **dict(model_config.saol),
        )
    return Classifier(
        backbone, num_classes, head=model_config.head, saol_head=saol_head, gap_decoder=gap_decoder, rngs=rngs
    )
