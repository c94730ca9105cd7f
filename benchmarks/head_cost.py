"""Parameters and FLOPs of GAP-FC vs SAOL on every backbone at its native resolution.

    python -m benchmarks.head_cost [--tiny] [--out PATH]

FLOPs come from XLA's cost analysis of the lowered (not compiled) inference
forward pass at batch 1, float32, BatchNorm in eval mode; models are built
under `nnx.eval_shape`, so nothing is allocated. The SAOL model also carries
the auxiliary GAP-FC branch, so its extra cost over GAP-FC is the whole head.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import default_out, format_table, publish
from saol_jax.models import build_model

# docs/method.md §3.5: the head adds <= 3% FLOPs to ResNet-50 at 224^2; the same bar for
# ViT-B/16 (over its class-token head) and ConvNeXt-T.
FLOPS_GOALS = (("resnet50", 3.0), ("vit_base_patch16", 3.0), ("convnext_tiny", 3.0))


@dataclasses.dataclass(frozen=True)
class Setting:
    """One backbone at its native input size, class count and SAOL width."""

    backbone: str
    image_size: int
    num_classes: int
    width: int
    backbone_kwargs: tuple[tuple[str, object], ...] = ()


CIFAR = ("resnet20", "resnet56", "resnet110", "wrn28_10", "pyramidnet110_a48", "pyramidnet200_a240")
IMAGENET = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VITS = ("vit_tiny_patch16", "vit_small_patch16", "vit_base_patch16")
CONVNEXTS = ("convnext_tiny", "convnext_small", "convnext_base")
SETTINGS = (
    [Setting(name, 32, k, 128) for k in (100, 10) for name in CIFAR]
    + [Setting(name, 224, 1000, 256) for name in IMAGENET]
    # GAP-FC on the ViTs is timm's class-token head (pool='token').
    + [Setting(name, 224, 1000, 256, (("pool", "token"),)) for name in VITS]
    + [Setting(name, 224, 1000, 256) for name in CONVNEXTS]
)
TINY_SETTINGS = [Setting("resnet_cifar", 16, 10, 16, (("depth", 8), ("widths", (8, 16, 32))))]


def model_config(
    backbone: str, head: str, width: int, *, dtype: str = "float32", ghost_bn_size: int = 0, **backbone_kwargs
) -> types.SimpleNamespace:
    """A `config.model` for `build_model`: S = 3 stages, k_att = 1, C_att = C_mid = `width`, no attention floor.

    A plain namespace rather than a ConfigDict, so that the benchmarks run
    where ml-collections is not installed.
    """
    return types.SimpleNamespace(
        backbone=backbone,
        backbone_kwargs=dict(backbone_kwargs),
        head=head,
        saol={"num_stages": 3, "att_kernel": 1, "att_width": width, "mid_width": width,
              "attention_floor": 0.0},
        dtype=dtype,
        ghost_bn_size=ghost_bn_size,
    )


def forward_cost(config: types.SimpleNamespace, image_size: int, num_classes: int) -> tuple[int, float]:
    """(parameter count, forward FLOPs per image) of the model `config` describes."""
    model = nnx.eval_shape(
        lambda: build_model(config, num_classes=num_classes, in_channels=3, rngs=nnx.Rngs(0))
    )
    model.eval()
    graphdef, state = nnx.split(model)
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    cost = jax.jit(forward).lower(state, images).cost_analysis()
    return params, float(cost["flops"])


def head_cost(setting: Setting) -> dict[str, object]:
    """GAP-FC and SAOL parameters and FLOPs for one setting, with SAOL's relative overhead."""
    kwargs = dict(setting.backbone_kwargs)
    gap_params, gap_flops = forward_cost(
        model_config(setting.backbone, "gap", setting.width, **kwargs), setting.image_size, setting.num_classes
    )
    saol_params, saol_flops = forward_cost(
        model_config(setting.backbone, "saol", setting.width, **kwargs), setting.image_size, setting.num_classes
    )
    return {
        "backbone": setting.backbone,
        "image_size": setting.image_size,
        "num_classes": setting.num_classes,
        "saol_width": setting.width,
        "gap_params": gap_params,
        "saol_params": saol_params,
        "gap_gflops": gap_flops / 1e9,
        "saol_gflops": saol_flops / 1e9,
        "params_ratio": saol_params / gap_params,
        "flops_ratio": saol_flops / gap_flops,
    }


def table(rows: list[dict]) -> str:
    headers = ["backbone", "input", "K", "C_att=C_mid", "params GAP-FC (M)", "params SAOL (M)",
               "GFLOPs GAP-FC", "GFLOPs SAOL", "FLOPs SAOL/GAP-FC", "+FLOPs %"]
    return format_table(headers, [
        [r["backbone"], f"{r['image_size']}²", r["num_classes"], r["saol_width"],
         f"{r['gap_params'] / 1e6:.2f}", f"{r['saol_params'] / 1e6:.2f}",
         f"{r['gap_gflops']:.3f}", f"{r['saol_gflops']:.3f}", f"{r['flops_ratio']:.4f}",
         f"{100 * (r['flops_ratio'] - 1):.2f}"]
        for r in rows
    ])


def goals(rows: list[dict]) -> dict[str, object]:
    """The FLOPs bar of docs/method.md §3.5 on each backbone of FLOPS_GOALS that was measured."""
    result = {}
    for backbone, limit in FLOPS_GOALS:
        measured = [100 * (r["flops_ratio"] - 1) for r in rows if r["backbone"] == backbone]
        if measured:
            result[f"{backbone}_head_flops_pct"] = {"limit": limit, "measured": measured[0],
                                                    "met": measured[0] <= limit}
    return result


def run(settings: list[Setting], out: str) -> dict:
    """Measures every setting, prints the table and writes the JSON; returns the payload."""
    rows = [head_cost(s) for s in settings]
    payload = {
        "what": "inference forward, batch 1, float32, XLA cost analysis of the lowered HLO",
        "rows": rows,
        "goals": goals(rows),
    }
    print(table(rows))
    for name, goal in payload["goals"].items():
        print(f"goal {name}: {goal['measured']:.2f}% (limit {goal['limit']}%): {'met' if goal['met'] else 'MISSED'}")
    publish(out, payload)
    return payload


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="one tiny backbone (for tests)")
    parser.add_argument("--out", default=default_out("head_cost"))
    args = parser.parse_args(argv)
    return run(TINY_SETTINGS if args.tiny else SETTINGS, args.out)


if __name__ == "__main__":
    main()
