"""torchvision ResNet-18/34/50/101/152 weights -> this project's ImageNet ResNet v1.5 checkpoint.

    python -m saol_jax.commands.convert_torchvision --weights resnet50.pth --arch resnet50 --out workdirs/resnet50_imagenet
    python -m saol_jax.train --config configs/cub_finetune.py --workdir workdirs/cub \
        --config.init_from=workdirs/resnet50_imagenet

`--weights` is a torchvision `state_dict` saved with `torch.save` (a dict
holding it under `state_dict` or `model` also works, and DataParallel's
`module.` prefixes are removed) or a `.safetensors` file. `--out` becomes a
directory laid out like a training run's workdir, `OUT/checkpoints/0`,
holding `params` and `batch_stats` of the model `backbone=<arch>,
head='gap'`, which `--config.init_from=OUT` loads. The torchvision `fc`
layer becomes the GAP-FC classifier (`gap_fc/fc`), so the converted model's
`gap_logits` are torchvision's logits; with `--num_classes K` other than the
`fc` layer's (0 for none) only the backbone is written. `convert(state_dict,
arch)` does the same in Python and returns the (params, batch_stats) nested
dicts; `load_into(model, params, batch_stats)` puts them into a built model.

Getting the real ImageNet weights (needs internet; torchvision only for the URL):

    import torch
    from torchvision.models import ResNet50_Weights   # or hard-code the URL below
    url = ResNet50_Weights.IMAGENET1K_V2.url
    # = https://download.pytorch.org/models/resnet50-11ad3fa6.pth (top-1 80.858%);
    # IMAGENET1K_V1 = https://download.pytorch.org/models/resnet50-0676ba61.pth (76.130%)
    state_dict = torch.hub.load_state_dict_from_url(url, map_location="cpu")
    torch.save(state_dict, "resnet50.pth")

The other depths: `ResNet18_Weights`, `ResNet34_Weights`, `ResNet101_Weights`,
`ResNet152_Weights` (`.IMAGENET1K_V1`, and `.IMAGENET1K_V2` for 50/101/152).
The weights expect RGB inputs in [0, 1] normalised with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): set `dataset.mean` and
`dataset.std` so (configs/cub_finetune.py does).

Layout: torch convs are OIHW, ours HWIO (transpose 2, 3, 1, 0); the `fc`
weight [K, C] becomes the kernel [C, K]; BatchNorm weight/bias/running_mean/
running_var become scale/bias (params) and mean/var (batch_stats), both with
eps 1e-5; `num_batches_tracked` is dropped. `layerS.B.downsample.0/1` are
the projection shortcut's conv and BN. Both use v1.5 strides (on a
bottleneck's 3x3 conv) and the same paddings, so no weights are reordered
beyond the transposes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from saol_jax.models.backbones import BACKBONES
from saol_jax.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from saol_jax.models.resnet_imagenet import ResNetImageNet

log = logging.getLogger(__name__)

# Architecture -> (blocks per stage, bottleneck), read from the backbone registry.
ARCHS: dict[str, tuple[tuple[int, ...], bool]] = {
    name: (builder.keywords["block_sizes"], builder.keywords["bottleneck"])
    for name, builder in BACKBONES.items()
    if getattr(builder, "func", None) is ResNetImageNet
}

_BN_PARAMS = (("weight", "scale"), ("bias", "bias"))
_BN_STATS = (("running_mean", "mean"), ("running_var", "var"))
_IGNORED_SUFFIXES = ("num_batches_tracked",)


class ConversionError(ValueError):
    """The weights do not fit the architecture (missing, unexpected or misshapen tensors)."""


# ------------------------------------------------------------------ mapping
def _layers(arch: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(kind, torch prefix, our path under `backbone`) of every conv and BN of `arch`."""
    block_sizes, bottleneck = ARCHS[arch]
    yield "conv", "conv1", ("stem_conv",)
    yield "bn", "bn1", ("stem_bn",)
    convs = 3 if bottleneck else 2
    channels = 64
    for s, size in enumerate(block_sizes):
        width = 64 * 2**s
        out_channels = width * (4 if bottleneck else 1)
        for b in range(size):
            torch_block, ours = f"layer{s + 1}.{b}", ("stages", str(s), str(b))
            for i in range(1, convs + 1):
                yield "conv", f"{torch_block}.conv{i}", (*ours, f"conv{i}")
                yield "bn", f"{torch_block}.bn{i}", (*ours, f"bn{i}")
            stride = 2 if s > 0 and b == 0 else 1
            if stride != 1 or channels != out_channels:
                yield "conv", f"{torch_block}.downsample.0", (*ours, "shortcut", "conv")
                yield "bn", f"{torch_block}.downsample.1", (*ours, "shortcut", "bn")
            channels = out_channels


def _as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any float dtype) or array-like as a float32 numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def infer_arch(state_dict: Mapping[str, Any]) -> str | None:
    """The architecture whose layout `state_dict`'s keys have, or None."""
    blocks = tuple(
        len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{s}.")}) for s in range(1, 5)
    )
    bottleneck = any(k.endswith(".conv3.weight") for k in state_dict)
    return next((a for a, spec in ARCHS.items() if spec == (blocks, bottleneck)), None)


def convert(state_dict: Mapping[str, Any], arch: str, *, include_fc: bool = True) -> tuple[dict, dict]:
    """A torchvision ResNet `state_dict` -> (params, batch_stats) of `backbone=<arch>, head='gap'`.

    Both are nested dicts of float32 numpy arrays keyed like the model's nnx
    state (list indices as strings): `params['backbone']['stages']['0']['0']
    ['conv1']['kernel']` is HWIO. With `include_fc` the `fc` layer becomes
    `params['gap_fc']['fc']` (kernel [C, K], bias [K]). Raises
    ConversionError naming the missing, unexpected or misshapen tensors.
    """
    if arch not in ARCHS:
        raise ConversionError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    state_dict = strip_prefixes(state_dict)
    params: dict = {}
    batch_stats: dict = {}
    used: set[str] = set()
    missing: list[str] = []

    def take(key: str) -> np.ndarray | None:
        if key not in state_dict:
            missing.append(key)
            return None
        used.add(key)
        return _as_numpy(state_dict[key])

    for kind, prefix, path in _layers(arch):
        path = ("backbone", *path)
        if kind == "conv":
            weight = take(f"{prefix}.weight")
            if weight is not None:
                if weight.ndim != 4:
                    raise ConversionError(f"{prefix}.weight has shape {weight.shape}, expected a 4-d conv kernel")
                _set(params, (*path, "kernel"), weight.transpose(2, 3, 1, 0))
            continue
        for torch_name, name in _BN_PARAMS:
            value = take(f"{prefix}.{torch_name}")
            if value is not None:
                _set(params, (*path, name), value)
        for torch_name, name in _BN_STATS:
            value = take(f"{prefix}.{torch_name}")
            if value is not None:
                _set(batch_stats, (*path, name), value)
    if include_fc:
        weight, bias = take("fc.weight"), take("fc.bias")
        if weight is not None and bias is not None:
            _set(params, ("gap_fc", "fc", "kernel"), weight.T)
            _set(params, ("gap_fc", "fc", "bias"), bias)
    else:
        used.update(k for k in ("fc.weight", "fc.bias") if k in state_dict)
    unexpected = sorted(k for k in state_dict if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if missing or unexpected:
        guess = infer_arch(state_dict)
        hint = f"; these weights look like {guess}: pass --arch {guess}" if guess and guess != arch else ""
        raise ConversionError(
            f"the weights do not fit torchvision's {arch}: {len(missing)} missing "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''}){hint}"
        )
    return params, batch_stats


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Unwraps {'state_dict'|'model': ...} and removes DataParallel's `module.` prefixes."""
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


# ------------------------------------------------------------------- files
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file as numpy arrays (format: 8-byte header size, JSON header, data)."""
    with open(path, "rb") as f:
        blob = f.read()
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size])
    header.pop("__metadata__", None)
    data = memoryview(blob)[8 + size:]
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        if entry["dtype"] == "BF16":
            import ml_dtypes  # installed with jax

            dtype = ml_dtypes.bfloat16
        elif entry["dtype"] in _SAFETENSORS_DTYPES:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        else:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(entry["shape"])
    return tensors


def load_state_dict(path: str) -> dict[str, Any]:
    """A state_dict from a `torch.save` file (.pth/.pt, needs torch) or a .safetensors file."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"reading {path} needs PyTorch (pip install torch); or save the weights as .safetensors"
        ) from None
    return dict(torch.load(path, map_location="cpu", weights_only=True))


# ------------------------------------------------------------------- model
def model_config(arch: str):
    """The `config.model` of the converted model: `arch` with the plain GAP-FC head, float32."""
    import ml_collections

    return ml_collections.ConfigDict({
        "backbone": arch, "backbone_kwargs": {}, "head": "gap", "saol": {},
        "dtype": "float32", "ghost_bn_size": 0,
    })


def build(arch: str, num_classes: int, seed: int = 0):
    """A freshly initialised Classifier `backbone=<arch>, head='gap'` for 3-channel images."""
    from flax import nnx

    from saol_jax.models import build_model

    return build_model(model_config(arch), num_classes=num_classes, in_channels=3, rngs=nnx.Rngs(seed))


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, (*prefix, name)))
        else:
            flat[(*prefix, name)] = value
    return flat


def load_into(model, params: dict, batch_stats: dict, *, backbone_only: bool = False) -> None:
    """Copies converted arrays into `model`'s variables (every one, or the backbone's); shapes must agree."""
    import jax.numpy as jnp
    from flax import nnx

    for kind, tree in ((nnx.Param, params), (nnx.BatchStat, batch_stats)):
        flat = _flatten(tree)
        leaves = []
        for path, variable in nnx.to_flat_state(nnx.state(model, kind)):
            key = tuple(str(k) for k in path)
            if backbone_only and key[0] != "backbone":
                continue
            name = "/".join(key)
            if key not in flat:
                raise ConversionError(f"the converted weights lack {name}")
            value = flat.pop(key)
            if tuple(value.shape) != tuple(variable.shape):
                raise ConversionError(f"{name}: converted shape {value.shape}, model shape {tuple(variable.shape)}")
            leaves.append((path, jnp.asarray(value, variable.dtype)))
        if flat:
            raise ConversionError(f"converted weights not in the model: {', '.join('/'.join(k) for k in flat)}")
        nnx.update(model, nnx.from_flat_state(leaves))


def write_checkpoint(out: str, params: dict, batch_stats: dict, arch: str, num_classes: int,
                     *, source: str = "", note: str | None = None) -> str:
    """Writes `out/checkpoints/0` as a training run would (params and batch_stats); returns its directory.

    Without `params['gap_fc']` only the backbone's variables are written.
    `note` (default: torchvision's input normalisation) goes to converted_from.json.
    """
    from flax import nnx

    from saol_jax.core import checkpoint, paths

    with_fc = "gap_fc" in params
    model = build(arch, num_classes if with_fc else 1)
    load_into(model, params, batch_stats, backbone_only=not with_fc)

    def kept(kind):
        flat = nnx.to_flat_state(nnx.state(model, kind))
        return nnx.from_flat_state([(p, v) for p, v in flat if with_fc or str(p[0]) == "backbone"])

    out = paths.resolve(out)
    directory = paths.join(out, "checkpoints")
    checkpointer = checkpoint.Checkpointer(directory, async_save=False)
    try:
        if checkpointer.steps():
            raise FileExistsError(f"{directory} already holds a checkpoint: choose another --out")
        checkpointer.save(0, {"params": kept(nnx.Param), "batch_stats": kept(nnx.BatchStat)})
        checkpointer.wait()
    finally:
        checkpointer.close()
    paths.write_text(paths.join(out, "converted_from.json"), json.dumps({
        "source": source, "arch": arch, "num_classes": num_classes if with_fc else None,
        "head": "gap_fc" if with_fc else None,
        "note": note or f"torchvision weights: normalise inputs with mean {IMAGENET_MEAN}, std {IMAGENET_STD}",
    }, indent=2))
    return directory


# ---------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m saol_jax.commands.convert_torchvision",
        description="Converts torchvision ResNet weights into a checkpoint directory for --config.init_from.",
    )
    parser.add_argument("--weights", required=True, help="torch.save'd state_dict (.pth/.pt) or .safetensors")
    parser.add_argument("--arch", required=True, choices=tuple(ARCHS))
    parser.add_argument("--out", required=True, help="output directory (becomes OUT/checkpoints/0)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the written GAP-FC classifier: default the fc layer's; "
                             "another number (or 0) writes the backbone only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("saol_jax").setLevel(logging.INFO)
    try:
        state_dict = strip_prefixes(load_state_dict(args.weights))
        fc_classes = int(np.shape(state_dict["fc.weight"])[0]) if "fc.weight" in state_dict else 0
        num_classes = fc_classes if args.num_classes is None else args.num_classes
        include_fc = num_classes > 0 and num_classes == fc_classes
        params, batch_stats = convert(state_dict, args.arch, include_fc=include_fc)
        directory = write_checkpoint(args.out, params, batch_stats, args.arch, num_classes, source=args.weights)
    except (ConversionError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    count = len(_flatten(params)) + len(_flatten(batch_stats))
    what = f"backbone and {num_classes}-class GAP-FC classifier" if include_fc else "backbone only"
    print(f"wrote {count} arrays of {args.arch} ({what}) to {directory}; "
          f"train with --config.init_from={os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
