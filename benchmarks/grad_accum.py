"""What gradient accumulation costs: one global batch as k micro-batches, k = 1, 2, 4.

    python -m benchmarks.grad_accum [--devices 8] [--accum 1,2,4] [--rung saol_ss_sd@paste] [--batch 128]
        [--backbone resnet_cifar] [--backbone_kwargs JSON] [--image_size 28] [--channels 1] [--tiny] [--out PATH]

Every k runs the real sharded train step (`saol_jax.core.train_step`) on the same
model and batch in one process, timed in alternation (`step_time`); k > 1
both as a loop over the micro-batches (what accelerators run) and unrolled
(what CPUs run). It is the same arithmetic in smaller pieces, so the CPU
time per step should stay close to k = 1's; any excess is what the loop and
the batch's split into micro-batches cost. XLA's temporary memory per
device shows what the accumulation saves.

The compiled program is also read for its collectives: the split must keep
each device's rows on that device (no all-gather or all-to-all beyond
k = 1's), and the table counts the all-reduces run once per micro-batch
(inside the loop) and once per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re

from benchmarks import default_out, format_table, publish
from benchmarks.step_time import TINY, Workload, frozen_kwargs, prepare, time_alternating
from saol_jax.core import sharding

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{\s*$", re.M)


def collectives(hlo: str) -> dict[str, dict[str, int]]:
    """Collective ops of an optimised HLO module, counted in the entry computation and in loop bodies.

    Returns {"per_step": {op: n}, "per_micro_batch": {op: n}}: ops of a
    while-loop body (the scan over micro-batches) run once per micro-batch.
    """
    bodies = set(re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", hlo))
    starts = list(_COMPUTATION.finditer(hlo))
    counts = {"per_step": dict.fromkeys(COLLECTIVES, 0), "per_micro_batch": dict.fromkeys(COLLECTIVES, 0)}
    for match, following in zip(starts, starts[1:] + [None]):
        text = hlo[match.start(): following.start() if following else len(hlo)]
        where = "per_micro_batch" if match.group(1) in bodies else "per_step"
        for op in COLLECTIVES:
            counts[where][op] += len(re.findall(rf"\b{op}(?:-start)?\(", text))
    return counts


def variants_of(accums: tuple[int, ...]) -> dict[str, tuple[int, bool]]:
    """Variant name -> (k, unrolled): k = 1 once, every other k as a loop and unrolled."""
    named = {}
    for k in accums:
        for unroll in ((False,) if k == 1 else (False, True)):
            named[f"{k}" if k == 1 else f"{k} {'unrolled' if unroll else 'loop'}"] = (k, unroll)
    return named


def measure(work: Workload, rung: str, accums: tuple[int, ...], *, devices: int, reps: int, steps: int) -> dict:
    """Timings, memory and collectives of `rung`'s train step for each k in `accums` (which must include 1)."""
    mesh = sharding.make_mesh(devices or None)
    load_before = os.getloadavg()[0]
    prepared, info = {}, {}
    for name, (k, unroll) in variants_of(accums).items():
        prepared[name], timings = prepare(
            dataclasses.replace(work, grad_accum_steps=k, grad_accum_unroll=unroll), rung, mesh)
        memory = prepared[name].step.memory_analysis()
        info[name] = {**timings, "grad_accum_steps": k, "unrolled": unroll,
                      "temp_mib": memory.temp_size_in_bytes / 2**20 if memory else float("nan"),
                      "collectives": collectives(prepared[name].step.as_text())}
        prepared[name].run(2)
    timed = time_alternating({name: p.run for name, p in prepared.items()}, work.batch, reps=reps, steps=steps)
    base_cpu = timed["1"]["cpu_ms_per_step_median"]
    variants = {
        name: {**info[name], **timed[name], "cpu_time_over_k1": timed[name]["cpu_ms_per_step_median"] / base_cpu}
        for name in prepared
    }
    return {
        "workload": dataclasses.asdict(work),
        "rung": rung,
        "devices": mesh.devices.size,
        "reps": reps,
        "steps_per_rep": steps,
        "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
        "variants": variants,
    }


def table(result: dict) -> str:
    rows = []
    for name, v in result["variants"].items():
        per_micro, per_step = v["collectives"]["per_micro_batch"], v["collectives"]["per_step"]
        other = sum(n for counts in (per_step, per_micro) for op, n in counts.items() if op != "all-reduce")
        rows.append([
            name, result["workload"]["batch"] // (result["devices"] * v["grad_accum_steps"]),
            f"{v['step_ms_median']:.0f}", f"{v['cpu_ms_per_step_median']:.0f}", f"{v['cpu_time_over_k1']:.2f}",
            f"{v['temp_mib']:.1f}", per_step["all-reduce"], per_micro["all-reduce"], other, f"{v['compile_s']:.1f}",
        ])
    return format_table(["k", "micro-batch/device", "ms/step", "CPU ms/step", "CPU vs k=1", "temp MiB/device",
                         "all-reduce per step", "all-reduce per micro-batch", "other collectives",
                         "compile s"], rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Workload(backbone="resnet_cifar", batch=128, image_size=28, channels=1, num_classes=10, width=64,
                        backbone_kwargs=(("depth", 8), ("widths", (32, 64, 128))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=8, help="fake CPU devices (0: leave jax's default)")
    parser.add_argument("--accum", default="1,2,4", help="micro-batches per step to compare; must include 1")
    parser.add_argument("--rung", default="saol_ss_sd@paste", help="ablation rung (step_time's names)")
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--backbone_kwargs", type=json.loads, default=dict(defaults.backbone_kwargs))
    parser.add_argument("--batch", type=int, default=defaults.batch, help="global batch")
    parser.add_argument("--image_size", type=int, default=defaults.image_size)
    parser.add_argument("--channels", type=int, default=defaults.channels)
    parser.add_argument("--num_classes", type=int, default=defaults.num_classes)
    parser.add_argument("--width", type=int, default=defaults.width, help="SAOL C_att = C_mid")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (for tests)")
    parser.add_argument("--out", default=default_out("grad_accum"))
    args = parser.parse_args(argv)
    args.accum = tuple(int(k) for k in args.accum.split(","))
    if 1 not in args.accum or min(args.accum) < 1:
        parser.error("--accum must be positive and include 1 (the reference)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sharding.configure_cpu_devices(args.devices)
    work = dataclasses.replace(TINY, batch=32) if args.tiny else Workload(
        backbone=args.backbone, batch=args.batch, image_size=args.image_size, channels=args.channels,
        num_classes=args.num_classes, width=args.width,
        backbone_kwargs=frozen_kwargs(args.backbone_kwargs),
    )
    result = measure(work, args.rung, args.accum, devices=args.devices, reps=args.reps, steps=args.steps)
    load = result["load_average_1m"]
    publish(args.out, result,
            f"{result['rung']}, global batch {work.batch} on {result['devices']} devices, {work.backbone}, "
            f"{result['reps']} reps x {result['steps_per_rep']} steps, "
            f"load average {load['start']:.1f} -> {load['end']:.1f} on {os.cpu_count()} cores", table(result))
    return result


if __name__ == "__main__":
    main()
