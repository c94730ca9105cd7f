"""Backbone registry: name -> constructor.

Every constructor takes `rngs` and the common keywords `in_channels`,
`dtype`, `ghost_size`; keyword arguments override the architecture preset
(e.g. `build_backbone('resnet56', widths=(32, 64, 128), rngs=...)`). The
generic names take every architecture argument from the keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flax import nnx

from saol_jax.models.pyramidnet import PyramidNet
from saol_jax.models.resnet_cifar import ResNetCifar
from saol_jax.models.resnet_imagenet import ResNetImageNet
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
}


def build_backbone(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Builds the backbone registered as `name`; `kwargs` go to its constructor."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](rngs=rngs, **kwargs)
