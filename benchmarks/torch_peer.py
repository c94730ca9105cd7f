"""PyTorch peer of the ResNet-50 GAP-FC train step: the yardstick for the JAX step on a GPU.

    python -m benchmarks.torch_peer [--device cuda] [--batch 256] [--image_size 224] [--num_classes 1000]
        [--dtype bfloat16|float32] [--modes eager,compile] [--reps 5] [--steps 10] [--warmup 3]
        [--tiny] [--out PATH]

One train step: uint8 images -> normalised float on the device, torchvision's
ResNet-50 (global average pooling + FC) in channels-last memory format,
autocast to `--dtype` (bfloat16 by default; float32 runs without autocast),
cross-entropy on integer labels, backward, SGD with Nesterov momentum 0.9
and coupled weight decay 1e-4 (PyTorch's SGD, as `saol_jax.core.optim.sgd`),
lr 0.1. One synthetic batch stays on the device, as in
`benchmarks.step_time`. `--modes` runs eager PyTorch and/or the
`torch.compile`d step; repetitions alternate between them and compile time
(the warm-up) is reported apart.

Compare with `python -m benchmarks.step_time --rungs gap,...` on the same
device: its GAP-FC step is the same network, optimiser and loss, plus CutMix
drawn on the device (a few elementwise passes over the batch) and its
accuracy metrics. This script is a benchmark only: neither the library nor
the tests import it, except a test of its argument parsing and tiny mode.
`--tiny` (CPU, for the tests): torchvision's ResNet-18 on 32x32, batch 4, float32, lr 0.01.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks import default_out, format_table, machine, publish

MODES = ("eager", "compile")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class PeerWorkload:
    """What one PyTorch train step processes."""

    arch: str = "resnet50"
    batch: int = 256
    image_size: int = 224
    num_classes: int = 1000
    dtype: str = "bfloat16"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4


TINY = PeerWorkload(arch="resnet18", batch=4, image_size=32, num_classes=4, dtype="float32", lr=0.01)


def make_step(work: PeerWorkload, device: torch.device, mode: str):
    """A `step()` closure that runs one train step on a fixed on-device batch; returns the loss tensor."""
    import torchvision  # only this script needs it (the GPU image has it; CI does not)

    torch.manual_seed(0)
    model = getattr(torchvision.models, work.arch)(num_classes=work.num_classes)
    model = model.to(device=device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=work.lr, momentum=work.momentum, nesterov=True,
                                weight_decay=work.weight_decay)
    generator = torch.Generator().manual_seed(0)
    shape = (work.batch, 3, work.image_size, work.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, work.num_classes, (work.batch,), generator=generator).to(device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255.0
    autocast = work.dtype != "float32"

    def train_step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = ((images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=DTYPES[work.dtype], enabled=autocast):
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    compiled = torch.compile(train_step) if mode == "compile" else train_step
    return lambda: compiled(images, labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(work: PeerWorkload, device: torch.device, modes: tuple[str, ...], *, reps: int, steps: int,
            warmup: int) -> dict:
    """img/s of each mode, repetitions alternating between modes; warm-up (compile) seconds apart."""
    runs, warmup_s = {}, {}
    for mode in modes:
        step = make_step(work, device, mode)
        start = time.perf_counter()
        for _ in range(warmup):
            step()
        _sync(device)
        warmup_s[mode] = time.perf_counter() - start
        runs[mode] = step
    samples = {mode: [] for mode in modes}
    for rep in range(reps):
        shift = rep % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            start = time.perf_counter()
            for _ in range(steps):
                loss = runs[mode]()
            _sync(device)
            assert torch.isfinite(loss).item(), f"{mode}: non-finite loss"
            samples[mode].append(work.batch * steps / (time.perf_counter() - start))
    variants = {
        mode: {"img_per_s_median": statistics.median(s), "img_per_s_min": min(s), "img_per_s_max": max(s),
               "step_ms_median": 1000 * work.batch / statistics.median(s), "warmup_s": warmup_s[mode],
               "samples_img_per_s": s}
        for mode, s in samples.items()
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"workload": dataclasses.asdict(work), "device": name, "torch": torch.__version__,
            "machine": machine(), "reps": reps, "steps_per_rep": steps, "warmup_steps": warmup,
            "variants": variants}


def table(result: dict) -> str:
    rows = [[mode, f"{v['img_per_s_median']:.1f}", f"{v['img_per_s_min']:.1f}-{v['img_per_s_max']:.1f}",
             f"{v['step_ms_median']:.1f}", f"{v['warmup_s']:.1f}"] for mode, v in result["variants"].items()]
    return format_table(["PyTorch", "img/s (median)", "img/s (min-max)", "ms/step", "warm-up s"], rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = PeerWorkload()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default=defaults.arch, help="a torchvision.models constructor")
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--image_size", type=int, default=defaults.image_size)
    parser.add_argument("--num_classes", type=int, default=defaults.num_classes)
    parser.add_argument("--dtype", default=defaults.dtype, choices=sorted(DTYPES))
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, among {','.join(MODES)}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repetition")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--tiny", action="store_true", help="ResNet-18, 32x32, batch 4, float32 (for tests)")
    parser.add_argument("--out", default=default_out("torch_peer"))
    args = parser.parse_args(argv)
    args.modes = tuple(args.modes.split(","))
    if not args.modes or not set(args.modes) <= set(MODES):
        parser.error(f"--modes must name some of {','.join(MODES)}, got {','.join(args.modes)!r}")
    for name in ("batch", "image_size", "num_classes", "reps", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        raise SystemExit("error: benchmarks.torch_peer needs torchvision, the one matching the installed torch "
                         f"{torch.__version__} (pip install torchvision)") from None
    work = TINY if args.tiny else PeerWorkload(arch=args.arch, batch=args.batch, image_size=args.image_size,
                                               num_classes=args.num_classes, dtype=args.dtype)
    result = measure(work, torch.device(args.device), args.modes, reps=args.reps, steps=args.steps,
                     warmup=args.warmup)
    publish(args.out, result,
            f"{work.arch}, batch {work.batch}, {work.image_size}x{work.image_size}, {work.dtype}, "
            f"K={work.num_classes} on {result['device']}, torch {result['torch']}", table(result))
    return result


if __name__ == "__main__":
    main()
