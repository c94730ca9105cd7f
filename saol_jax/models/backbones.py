"""Backbone registry: name -> constructor.

Every constructor takes `rngs` and the common keywords `in_channels` and
`dtype`, and those with BatchNorm `ghost_size`; keyword arguments override the architecture preset
(e.g. `build_backbone('resnet56', widths=(32, 64, 128), rngs=...)`). The
generic names take every architecture argument from the keywords.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

from flax import nnx

from saol_jax.models.convnext import ConvNeXt
from saol_jax.models.pyramidnet import PyramidNet
from saol_jax.models.resnet_cifar import ResNetCifar
from saol_jax.models.resnet_imagenet import ResNetImageNet
from saol_jax.models.vit import VisionTransformer
from saol_jax.models.wide_resnet import WideResNet


BACKBONES: dict[str, Callable[..., nnx.Module]] = {
    "resnet_cifar": ResNetCifar,
    "wide_resnet": WideResNet,
    "pyramidnet": PyramidNet,
    "resnet20": partial(ResNetCifar, depth=20),
    "resnet56": partial(ResNetCifar, depth=56),
    "resnet110": partial(ResNetCifar, depth=110),
    "wrn28_10": partial(WideResNet, depth=28, widen_factor=10),
    "pyramidnet110_a48": partial(PyramidNet, depth=110, alpha=48, bottleneck=False),
    "pyramidnet200_a240": partial(PyramidNet, depth=200, alpha=240, bottleneck=True),
    "resnet18": partial(ResNetImageNet, block_sizes=(2, 2, 2, 2), bottleneck=False),
    "resnet34": partial(ResNetImageNet, block_sizes=(3, 4, 6, 3), bottleneck=False),
    "resnet50": partial(ResNetImageNet, block_sizes=(3, 4, 6, 3), bottleneck=True),
    "resnet101": partial(ResNetImageNet, block_sizes=(3, 4, 23, 3), bottleneck=True),
    "resnet152": partial(ResNetImageNet, block_sizes=(3, 8, 36, 3), bottleneck=True),
    # timm's vit_{tiny,small,base}_patch16_224 and a small-patch ViT for 28-64 px inputs.
    "vit": VisionTransformer,
    "vit_tiny_patch16": partial(VisionTransformer, patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16": partial(VisionTransformer, patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16": partial(VisionTransformer, patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_mini_patch4": partial(VisionTransformer, patch_size=4, embed_dim=128, depth=6, num_heads=4, img_size=32),
    # timm's convnext_{tiny,small,base} and a 3-stage ConvNeXt with a stride-2 stem for 28-64 px inputs.
    "convnext": ConvNeXt,
    "convnext_tiny": partial(ConvNeXt, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": partial(ConvNeXt, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_base": partial(ConvNeXt, depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "convnext_mini": partial(ConvNeXt, depths=(2, 2, 2), dims=(32, 64, 128), stem_stride=2),
}


def build_backbone(name: str, *, rngs: nnx.Rngs, ghost_size: int = 0, **kwargs) -> nnx.Module:
    """Builds the backbone registered as `name`; `kwargs` go to its constructor.

    `ghost_size` reaches only the backbones with BatchNorm (the ViT and
    ConvNeXt normalise per token with LayerNorm, so it has nothing to split).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    constructor = BACKBONES[name]
    if "ghost_size" in _init_parameters(constructor):
        kwargs["ghost_size"] = ghost_size
    return constructor(rngs=rngs, **kwargs)


def _init_parameters(constructor: Callable[..., nnx.Module]) -> set[str]:
    """The parameter names of the backbone class's `__init__` (an nnx class's own signature is its
    metaclass's `*args, **kwargs`)."""
    cls = constructor.func if isinstance(constructor, partial) else constructor
    return set(inspect.signature(cls.__init__).parameters)
