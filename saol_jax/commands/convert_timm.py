"""timm ViT and ConvNeXt weights -> this project's checkpoint, for `--config.init_from`.

    python -m saol_jax.commands.convert_timm --weights vit_base_patch16_224.safetensors --arch vit_base_patch16 \
        --out workdirs/vit_b16_imagenet
    python -m saol_jax.train --config configs/cub_finetune.py --workdir workdirs/cub_vit \
        --config.model.backbone=vit_base_patch16 --config.init_from=workdirs/vit_b16_imagenet

`--weights` is the state_dict of timm's `vit_{tiny,small,base}_patch16_224`
or `convnext_{tiny,small,base}` (timm's own layout: the `model.safetensors`
of its Hugging Face repositories, or `torch.save(model.state_dict())`); the
`--arch` names are this project's (`vit_base_patch16`, `convnext_tiny`, ...).
The output is laid out as convert_torchvision's (`OUT/checkpoints/0`,
`converted_from.json`): the backbone, and timm's classifier as the GAP-FC
layer (`gap_fc/fc`) when `--num_classes` is the classifier's. `init_from`
loads the backbone whole and, with another class count or head, initialises
the heads afresh.

Equal logits: timm's ViT heads read the class token, so set
`--config.model.backbone_kwargs.pool=token` to get timm's logits from
`gap_logits`; the default `pool='avg'` classifies the mean of the patch
tokens (the same weights). ConvNeXt's head LayerNorm (`head.norm`) is part
of the backbone (`head_norm`) and loads with it.

Layout: torch convs OIHW -> HWIO (the depthwise 7x7 becomes [7, 7, 1, C]),
linear weights [out, in] -> kernels [in, out], LayerNorm weight -> scale;
`cls_token`, `pos_embed` and the layer scales `gamma` keep their shapes.
ViTs trained with timm's average pooling (`fc_norm`) or registers, and
other image sizes than 224 (another `pos_embed` grid), are not converted.

`python -m saol_jax.commands.convert_timm --check_timm vit_tiny_patch16_224[,convnext_tiny...]
[--out FILE.json]` (needs timm) builds each timm model with random weights, converts it
and prints the largest logit difference (ours vs timm, eval mode); `--out` also
writes the differences and the versions to a JSON file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from saol_jax.commands.convert_torchvision import (
    ConversionError,
    _as_numpy,
    _flatten,
    _set,
    load_into,
    load_state_dict,
    strip_prefixes,
    write_checkpoint,
)
from saol_jax.core import paths
from saol_jax.models.backbones import BACKBONES
from saol_jax.models.convnext import ConvNeXt
from saol_jax.models.vit import VisionTransformer

log = logging.getLogger(__name__)

# Our architecture name -> the family whose layout its timm weights have (named sizes only).
ARCHS: dict[str, str] = {
    name: "vit" if builder.func is VisionTransformer else "convnext"
    for name, builder in BACKBONES.items()
    if getattr(builder, "func", None) in (VisionTransformer, ConvNeXt) and "mini" not in name
}

# timm module prefix -> ours (under `backbone` unless the target starts with `gap_fc`), first match wins.
_RENAMES = {
    "vit": ((r"^patch_embed\.proj\.", "patch_embed."), (r"^head\.", "gap_fc.fc.")),
    "convnext": (
        (r"^stem\.0\.", "stem_conv."), (r"^stem\.1\.", "stem_norm."),
        (r"^(stages\.\d+\.downsample)\.0\.", r"\1.norm."), (r"^(stages\.\d+\.downsample)\.1\.", r"\1.conv."),
        (r"^head\.norm\.", "head_norm."), (r"^head\.fc\.", "gap_fc.fc."),
    ),
}
_UNSUPPORTED = {"fc_norm.weight": "a ViT trained with average pooling (fc_norm)",
                "reg_token": "a ViT with register tokens"}
_HEAD_KEYS = {"vit": ("head.weight", "head.bias"), "convnext": ("head.fc.weight", "head.fc.bias")}
INPUT_NOTE = ("timm weights: normalise inputs as the model's pretrained config says "
              "(vit_*_patch16_224.augreg*: mean 0.5, std 0.5; convnext_*: ImageNet mean and std)")


def family(state_dict: Mapping[str, Any]) -> str:
    """'vit' or 'convnext' from the keys of a timm state_dict; ConversionError otherwise."""
    for key, what in _UNSUPPORTED.items():
        if key in state_dict:
            raise ConversionError(f"these weights are {what}, which this converter does not support")
    if "patch_embed.proj.weight" in state_dict:
        return "vit"
    if "stem.0.weight" in state_dict:
        return "convnext"
    raise ConversionError("the weights are neither a timm ViT (patch_embed.proj) nor a timm ConvNeXt (stem.0)")


def _tensor(key: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """(our leaf name, array in our layout) of one timm tensor."""
    name = key.rsplit(".", 1)[-1]
    if name == "weight" and value.ndim == 4:
        return "kernel", value.transpose(2, 3, 1, 0)
    if name == "weight" and value.ndim == 2:
        return "kernel", value.T
    if name == "weight" and value.ndim == 1:
        return "scale", value
    return name, value


def convert(state_dict: Mapping[str, Any], *, include_head: bool = True) -> tuple[dict, dict]:
    """A timm ViT / ConvNeXt `state_dict` -> (params, batch_stats) nested dicts of float32 arrays.

    Keys follow the model's nnx state (list indices as strings); batch_stats is
    empty (no BatchNorm). With `include_head` timm's classifier becomes
    `params['gap_fc']['fc']`. Whether every tensor fits an architecture is
    checked when the arrays are loaded into a model (`load_into`).
    """
    state_dict = strip_prefixes(state_dict)
    kind = family(state_dict)
    params: dict = {}
    for key, value in state_dict.items():
        if not include_head and key in _HEAD_KEYS[kind]:
            continue
        ours = key
        for pattern, target in _RENAMES[kind]:
            if re.match(pattern, ours):
                ours = re.sub(pattern, target, ours)
                break
        name, array = _tensor(key, _as_numpy(value))
        path = tuple(ours.split(".")[:-1]) + (name,)
        _set(params, path if path[0] == "gap_fc" else ("backbone", *path), array)
    return params, {}


def infer_arch(state_dict: Mapping[str, Any]) -> str | None:
    """The named architecture whose shapes `state_dict` has (ViT: width and depth; ConvNeXt:
    widths and blocks per stage), or None."""
    from flax import nnx

    state_dict = strip_prefixes(state_dict)
    kind = family(state_dict)
    flat = _flatten(convert(state_dict, include_head=False)[0])
    shapes = {k: tuple(np.shape(v)) for k, v in flat.items()}
    for arch, arch_kind in ARCHS.items():
        if arch_kind != kind:
            continue
        model = nnx.eval_shape(lambda a=arch: BACKBONES[a](rngs=nnx.Rngs(0)))
        expected = {("backbone", *(str(p) for p in path)): tuple(v.shape)
                    for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        if expected == shapes:
            return arch
    return None


def check_against_timm(timm_name: str, *, seed: int = 0, batch: int = 2) -> float:
    """Largest |ours - timm| over the eval-mode logits of timm's `timm_name` with random weights
    (no download), on random 224x224 images. Needs timm."""
    import jax.numpy as jnp
    import timm
    import torch
    from flax import nnx

    from saol_jax.models import build_model

    torch.manual_seed(seed)
    reference = timm.create_model(timm_name, pretrained=False).eval()
    state_dict = reference.state_dict()
    arch = infer_arch(state_dict)
    if arch is None:
        raise ConversionError(f"{timm_name} matches none of {', '.join(ARCHS)}")
    params, batch_stats = convert(state_dict)
    config = _model_config(arch, pool="token" if ARCHS[arch] == "vit" else None)
    model = build_model(config, num_classes=reference.num_classes, in_channels=3, rngs=nnx.Rngs(0))
    load_into(model, params, batch_stats)
    model.eval()
    images = np.random.default_rng(seed).normal(size=(batch, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images)).numpy()
    ours = np.asarray(model(jnp.asarray(images.transpose(0, 2, 3, 1)))["gap_logits"])
    return float(np.abs(ours - theirs).max())


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_timm_models(timm_names: list[str], out: str | None = None) -> dict[str, float]:
    """check_against_timm for each name, a line each; with `out`, also a JSON file of the differences
    and the versions that produced them (benchmarks/results/timm_check_*.json)."""
    try:
        diffs = {}
        for name in timm_names:
            diffs[name] = check_against_timm(name)
            print(f"{name}: largest |logit difference| ours vs timm = {diffs[name]:.3g}")
    except ImportError as error:
        raise ConversionError(f"--check_timm needs timm and torch ({error})") from None
    if out:
        import jax

        versions = {name: _installed_version(name) for name in ("timm", "torch", "jax", "flax")}
        payload = {"machine": {"cpu": platform.processor() or platform.machine(), "jax_backend": jax.default_backend()},
                   "versions": versions, "inputs": "random weights (seed 0), 2 random 224x224 images, eval mode",
                   "max_abs_logit_difference": diffs}
        paths.write_json(out, payload)
        print(f"wrote {out}")
    return diffs


def _model_config(arch: str, *, pool: str | None = None):
    """`config.model` of `arch` with the GAP-FC head (and `pool` for a ViT)."""
    import ml_collections

    return ml_collections.ConfigDict({
        "backbone": arch, "backbone_kwargs": {} if pool is None else {"pool": pool}, "head": "gap",
        "saol": {}, "dtype": "float32", "ghost_bn_size": 0,
    })


# ---------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m saol_jax.commands.convert_timm",
        description="Converts timm ViT / ConvNeXt weights into a checkpoint directory for --config.init_from.",
    )
    parser.add_argument("--weights", help="timm state_dict: .safetensors or torch.save'd .pth/.pt")
    parser.add_argument("--arch", choices=tuple(ARCHS))
    parser.add_argument("--out", help="output directory (becomes OUT/checkpoints/0); with --check_timm, "
                                      "a JSON file of the differences")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the written GAP-FC classifier: default the timm head's; "
                             "another number (or 0) writes the backbone only")
    parser.add_argument("--check_timm", metavar="TIMM_NAME[,TIMM_NAME...]",
                        help="instead of converting: compare with timm's models of these names (needs timm)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("saol_jax").setLevel(logging.INFO)
    try:
        if args.check_timm:
            check_timm_models(args.check_timm.split(","), args.out)
            return
        missing = [f"--{name}" for name in ("weights", "arch", "out") if getattr(args, name) is None]
        if missing:
            raise ConversionError(f"{', '.join(missing)} required (or --check_timm)")
        state_dict = strip_prefixes(load_state_dict(args.weights))
        head_key = _HEAD_KEYS[family(state_dict)][0]
        head_classes = int(np.shape(state_dict[head_key])[0]) if head_key in state_dict else 0
        num_classes = head_classes if args.num_classes is None else args.num_classes
        include_head = num_classes > 0 and num_classes == head_classes
        if ARCHS[args.arch] != family(state_dict):
            raise ConversionError(f"--arch {args.arch} is a {ARCHS[args.arch]}, the weights a {family(state_dict)}")
        params, batch_stats = convert(state_dict, include_head=include_head)
        try:
            directory = write_checkpoint(args.out, params, batch_stats, args.arch, num_classes,
                                         source=args.weights, note=INPUT_NOTE)
        except ConversionError as error:
            guess = infer_arch(state_dict)
            hint = f"; these weights look like {guess}: pass --arch {guess}" if guess and guess != args.arch else ""
            raise ConversionError(f"the weights do not fit {args.arch}: {error}{hint}") from None
    except (ConversionError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    count = len(_flatten(params))
    what = f"backbone and {num_classes}-class GAP-FC classifier" if include_head else "backbone only"
    print(f"wrote {count} arrays of {args.arch} ({what}) to {directory}; "
          f"train with --config.model.backbone={args.arch} --config.init_from={os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
