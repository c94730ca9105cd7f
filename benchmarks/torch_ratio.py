"""CPU train-step throughput of this project against PyTorch eager on the same network.

    python -m benchmarks.torch_ratio [--devices N] [--batch 64] [--xla NAME=VALUE[;NAME=VALUE]]...
        [--torch_threads 1,2] [--tiny] [--out PATH]

Both sides train the CIFAR ResNet-56 with a GAP-FC head (option-A
shortcuts, K=100, batch 64, 32x32, float32) on one fixed batch: uint8 ->
normalised float, forward, cross-entropy, backward, SGD with Nesterov
momentum 0.9 and coupled weight decay 1e-4. CutMix is off on both sides
(JAX: `cutmix_prob=0`, so its boxes are drawn but empty; PyTorch: none).
The JAX side is the project's real sharded train step
(`benchmarks.step_time.prepare`, which also computes its accuracy metrics);
the PyTorch side is the eager model below. Repetitions alternate between
the sides in one process, so machine load hits them alike.

Each `--xla` adds a JAX variant compiled with those XLA debug options (for
that compilation only), timed in the same rotation as the default and
PyTorch. The fake CPU device count (`--devices`) is fixed per process; runs
with different counts compare through their PyTorch figures. PyTorch runs
once per `--torch_threads` count (default 1 and all cores): on a machine
shared with other jobs its OpenMP threads wait on each other at every op,
so one thread can be several times faster than all cores. Ratios are to the
fastest PyTorch entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

import jax
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import default_out, machine, publish
from benchmarks.tables import torch_ratio_table
from benchmarks.step_time import TINY, Workload, _optim_config, host_batch, prepare, time_alternating
from saol_jax.core import sharding

CIFAR_DEPTHS = {"resnet20": 20, "resnet56": 56, "resnet110": 110}
CIFAR_WIDTHS = (16, 32, 64)
DEFAULT = "jax"
# The step's normalisation constants (benchmarks.step_time.prepare uses the same).
MEAN, STD = 0.5, 0.25


class TorchBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus an option-A shortcut (subsample, zero-pad channels), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, C_out, H/s, W/s]."""
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(y + shortcut)


class TorchResNetCifar(nn.Module):
    """The network of `saol_jax.models.resnet_cifar.ResNetCifar` with a GAP-FC head, in PyTorch."""

    def __init__(self, depth: int, widths: tuple[int, ...], num_classes: int, in_channels: int = 3):
        super().__init__()
        blocks_per_stage = (depth - 2) // (2 * len(widths))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, channels = [], widths[0]
        for s, width in enumerate(widths):
            for b in range(blocks_per_stage):
                blocks.append(TorchBasicBlock(channels, width, 2 if s > 0 and b == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] normalised -> logits [B, K]."""
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


@dataclasses.dataclass
class TorchStep:
    """The PyTorch eager train step on one fixed batch, on `threads` intra-op threads."""

    model: TorchResNetCifar
    optimizer: torch.optim.Optimizer
    images: torch.Tensor  # uint8 [B, H, W, C], as the JAX step receives them
    labels: torch.Tensor
    threads: int

    def run(self, steps: int) -> float:
        """Runs `steps` train steps; returns the last loss."""
        torch.set_num_threads(self.threads)
        loss = None
        for _ in range(steps):
            x = (self.images.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD
            loss = F.cross_entropy(self.model(x), self.labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.item()


def torch_architecture(work: Workload) -> tuple[int, tuple[int, ...]]:
    """(depth, widths) of the CIFAR ResNet that `work` names."""
    kwargs = dict(work.backbone_kwargs)
    depth = kwargs.get("depth", CIFAR_DEPTHS.get(work.backbone))
    if depth is None:
        raise ValueError(f"no PyTorch twin for backbone {work.backbone!r}; CIFAR ResNets only")
    return depth, tuple(kwargs.get("widths", CIFAR_WIDTHS))


def torch_step(work: Workload, threads: int) -> TorchStep:
    """The PyTorch model, optimiser and the benchmark's fixed batch."""
    torch.manual_seed(0)
    depth, widths = torch_architecture(work)
    model = TorchResNetCifar(depth, widths, work.num_classes, work.channels).train()
    opt = _optim_config(work.lr)  # the JAX side's optimiser settings
    optimizer = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                weight_decay=opt.weight_decay)
    batch = host_batch(work)
    return TorchStep(model, optimizer, torch.from_numpy(batch["image"]), torch.from_numpy(batch["label"]).long(),
                     threads)


def param_count_jax(state: object) -> int:
    """Trainable parameters of a JAX TrainState (BatchNorm statistics excluded, as in PyTorch)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))


def param_count_torch(model: nn.Module) -> int:
    """Trainable parameters of a PyTorch model (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def option_value(text: str) -> str | bool | int:
    """An XLA option's value as jax's compiler options want it: bools and ints typed."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else text


def parse_options(spec: str) -> dict[str, str | bool | int]:
    """'name=value;name=value' -> XLA debug options (names without the leading '--')."""
    pairs = [item.split("=", 1) for item in spec.split(";") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--xla takes NAME=VALUE[;NAME=VALUE], got {spec!r}")
    return {name.lstrip("-"): option_value(value) for name, value in pairs}


def torch_name(threads: int) -> str:
    """The table and JSON name of the PyTorch entry on `threads` threads."""
    return f"torch {threads} thread" + ("s" if threads > 1 else "")


def measure(work: Workload, *, devices: int, xla_variants: list[str], torch_threads: list[int], reps: int,
            steps: int, warmup: int) -> dict:
    """Alternating timing of the JAX default, each `--xla` variant and PyTorch on each thread count.

    Ratios are to the fastest PyTorch entry (median img/s) and to the JAX default.
    """
    mesh = sharding.make_mesh(devices or None)
    load_before = os.getloadavg()[0]
    jax_steps, compile_s = {}, {}
    for name in [DEFAULT, *xla_variants]:
        options = parse_options(name) if name != DEFAULT else None
        jax_steps[name], timings = prepare(work, "gap", mesh, options)
        compile_s[name] = timings["compile_s"]
        jax_steps[name].run(warmup)
    torch_steps = {torch_name(n): torch_step(work, n) for n in torch_threads}
    for reference in torch_steps.values():
        reference.run(warmup)
    twin = next(iter(torch_steps.values())).model
    params = {"jax": param_count_jax(jax_steps[DEFAULT].state), "torch": param_count_torch(twin)}
    if params["jax"] != params["torch"]:
        raise RuntimeError(f"the two networks differ in parameter count: {params}")
    runs = {name: prepared.run for name, prepared in (jax_steps | torch_steps).items()}
    variants = time_alternating(runs, work.batch, reps=reps, steps=steps)
    best_torch = max(torch_steps, key=lambda name: variants[name]["img_per_s_median"])
    torch_img_s = variants[best_torch]["img_per_s_median"]
    default_img_s = variants[DEFAULT]["img_per_s_median"]
    for name, v in variants.items():
        v["over_torch"] = v["img_per_s_median"] / torch_img_s
        v["over_jax_default"] = v["img_per_s_median"] / default_img_s
        v["compile_s"] = compile_s.get(name)
    return {
        "workload": dataclasses.asdict(work),
        "devices": mesh.devices.size,
        "per_device_batch": work.batch // mesh.devices.size,
        "torch": {"version": torch.__version__, "best": best_torch},
        "params": params["jax"],
        "reps": reps,
        "steps_per_rep": steps,
        "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
        "variants": variants,
        "jax_over_torch": variants[DEFAULT]["over_torch"],
    }


def report(result: dict, cpu: str) -> None:
    work, load = result["workload"], result["load_average_1m"]
    print(f"{work['backbone']} GAP-FC, {result['params']:,} params, global batch {work['batch']}, "
          f"{work['image_size']}x{work['image_size']}, {work['dtype']}, CutMix off; JAX on {result['devices']} "
          f"CPU devices ({result['per_device_batch']}/device), torch {result['torch']['version']}; "
          f"{result['reps']} reps x {result['steps_per_rep']} steps; "
          f"load average {load['start']:.1f} -> {load['end']:.1f}; CPU {cpu}")
    print(torch_ratio_table(result))
    print(f"JAX / PyTorch throughput: {result['jax_over_torch']:.3f} (against {result['torch']['best']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=0, help="fake CPU devices (0: leave jax's default)")
    parser.add_argument("--batch", type=int, default=Workload().batch, help="global batch")
    parser.add_argument("--xla", action="append", default=[], metavar="NAME=VALUE[;NAME=VALUE]",
                        help="an extra JAX variant compiled with these XLA debug options (repeatable)")
    parser.add_argument("--torch_threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated PyTorch intra-op thread counts, each timed as its own entry")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (for tests)")
    parser.add_argument("--out", default=default_out("torch_ratio"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sharding.configure_cpu_devices(args.devices)
    base = TINY if args.tiny else Workload(batch=args.batch)
    work = dataclasses.replace(base, cutmix_prob=0.0)
    torch_threads = sorted({int(n) for n in args.torch_threads.split(",")})
    result = measure(work, devices=args.devices, xla_variants=args.xla, torch_threads=torch_threads,
                     reps=args.reps, steps=args.steps, warmup=args.warmup)
    report(result, machine()["cpu"])
    publish(args.out, result)
    return result


if __name__ == "__main__":
    main()
