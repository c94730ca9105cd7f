"""Train-step throughput of GAP-FC vs SAOL + SS + SD on the same backbone.

    python -m benchmarks.step_time [--devices N] [--backbone resnet56] [--batch 64] [--tiny] [--out PATH]
        [--rungs gap,saol_ss_sd,saol_ss_sd@paste] [--backbone_kwargs JSON] [--channels C]

Both variants run the real sharded train step (`saol_jax.core.train_step`, CutMix
on device, every loss term of their ablation rung, SGD update) on one fixed
batch in the same process; repetitions alternate between the variants so
that drifting machine load hits both alike. Compile time is reported apart.
"CPU ms/step" is the process's CPU time (all threads) per step: on a shared
machine it moves less with other processes' load than the wall time does.
`--devices N` splits the CPU host into N devices (the global batch is
sharded over them), which is what makes XLA's CPU convolutions fast.
A rung `<rung>@<form>` uses that SS-2 form (`loss.ss2_form`), a rung without
one the recipes' default (`saol_jax.core.ladder.BASE_LOSS`, what users run); every
table row and JSON entry names the form its step ran. The forms of
`losses.PASTED_TARGET_FORMS` add a forward pass of the un-mixed batch to every step;
the `paste` variants of `saol_jax.core.ladder.PASTE_VARIANTS` (`saol_ss_sd@paste_self`) make it cheaper.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
import types
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from benchmarks import PRE_FORMS_SS2, default_out, format_table, publish
from benchmarks.head_cost import model_config
from saol_jax.core import optim, sharding
from saol_jax.core.ladder import BASE_LOSS, HEAD_LADDER, MODEL_HEADS, PASTE_VARIANTS, rung_loss, split_rung
from saol_jax.core.losses import SS2_FORMS
from saol_jax.core.train_step import StepConfig, create_train_state, make_train_step, output_grid
from saol_jax.models import DTYPES, build_model

VARIANTS = ("gap", "saol_ss_sd")
RUNG_FORMS = (*SS2_FORMS, *PASTE_VARIANTS)  # what may follow a rung's `@`
RUNG_NAMES = {"gap": "GAP-FC", "gap_ms": "GAP-FC multi-scale", "saol": "SAOL", "saol_ss": "SAOL+SS",
              "saol_ss_sd": "SAOL+SS+SD"}
SAOL_SLOWDOWN_GOAL = 0.05  # docs/method.md §3.5: the head adds <= 5% train-step time
RESNET56_IMG_S_GOAL = 100.0


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one train step processes."""

    backbone: str = "resnet56"
    batch: int = 64
    image_size: int = 32
    channels: int = 3
    num_classes: int = 100
    width: int = 128
    dtype: str = "float32"
    backbone_kwargs: tuple[tuple[str, object], ...] = ()
    cutmix_group_size: int = 0  # 0: the per-device batch
    ghost_bn_size: int = 0  # 0: BatchNorm statistics over the global batch
    lr: float = 0.1
    cutmix_prob: float = 1.0  # 0: every CutMix box is empty (the step still draws them)
    grad_accum_steps: int = 1  # micro-batches per optimiser step (the global batch stays `batch`)
    grad_accum_unroll: bool | None = None  # StepConfig.grad_accum_unroll (None: by platform)


def frozen_kwargs(kwargs: dict) -> tuple[tuple[str, object], ...]:
    """`--backbone_kwargs` JSON as Workload's hashable pairs (lists become tuples)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items())


TINY = Workload(backbone="resnet_cifar", batch=16, image_size=12, num_classes=4, width=8,
                backbone_kwargs=(("depth", 8), ("widths", (8, 16, 32))))


def rung_form(rung: str) -> str | None:
    """The SS-2 form (or `paste` variant) the rung's step runs: its `@form`, else the recipes' default;
    None without SS-2."""
    base, form = split_rung(rung)
    return (form or BASE_LOSS["ss2_form"]) if HEAD_LADDER[base]["ss2"] else None


def rung_loss_config(rung: str) -> dict[str, float | str]:
    """The rung's `config.loss`: the recipes' base one with the rung's weights and `@form` fields."""
    base, form = split_rung(rung)
    return {**BASE_LOSS, **HEAD_LADDER[base], **(rung_loss(form) if form else {})}


def rung_name(rung: str) -> str:
    """'saol_ss_sd' -> 'SAOL+SS+SD (paste)': the head and the SS-2 form its step runs."""
    form = rung_form(rung)
    return RUNG_NAMES[split_rung(rung)[0]] + (f" ({form})" if form else "")


def variant_form(rung: str, variant: dict) -> str | None:
    """The SS-2 form a result file's entry `variant` of `rung` ran: the one it records, else (an earlier
    file) the rung's `@form` or PRE_FORMS_SS2; None without SS-2."""
    base, form = split_rung(rung)
    if not HEAD_LADDER[base]["ss2"]:
        return None
    return variant.get("ss2_form") or form or PRE_FORMS_SS2


def variant_name(rung: str, variant: dict) -> str:
    """'SAOL+SS+SD (paste)': the head and the SS-2 form a result file's entry of `rung` ran (variant_form),
    which for a rung without `@form` need not be today's default."""
    form = variant_form(rung, variant)
    return RUNG_NAMES[split_rung(rung)[0]] + (f" ({form})" if form else "")


def parse_rungs(text: str, required: tuple[str, ...] = ()) -> tuple[str, ...]:
    """'gap,saol_ss_sd@renorm' -> its rungs; ValueError naming the valid ones for an unknown rung or form,
    or when a `required` rung is missing."""
    rungs = tuple(text.split(","))
    bad = [r for r in rungs if split_rung(r)[0] not in RUNG_NAMES or split_rung(r)[1] not in (None, *RUNG_FORMS)]
    if bad or not set(required) <= set(rungs):
        need = f"must include {','.join(required)} and " if required else ""
        raise ValueError(f"--rungs {need}only name {','.join(RUNG_NAMES)}, each optionally "
                         f"@{'|'.join(RUNG_FORMS)} (without one: {BASE_LOSS['ss2_form']}); got {text!r}")
    return rungs


def _optim_config(lr: float) -> types.SimpleNamespace:
    """A constant-lr `config.optim` (a namespace: no ml-collections needed)."""
    return types.SimpleNamespace(
        lr=lr, base_batch_size=0, momentum=0.9, nesterov=True,
        weight_decay=1e-4, schedule="constant", warmup_epochs=0.0,
    )


@dataclasses.dataclass
class Prepared:
    """A jitted train step with its state, batch and key, ready to be timed."""

    step: Callable
    state: object
    batch: dict[str, jax.Array]
    key: jax.Array

    def run(self, steps: int) -> jax.Array:
        """Runs `steps` train steps and returns the last total loss (blocks until done)."""
        metrics = None
        for _ in range(steps):
            self.state, metrics = self.step(self.state, self.batch, self.key)
        return jax.block_until_ready(metrics["loss/total"])


def host_batch(work: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random batch of uint8 images and labels."""
    rng = np.random.default_rng(seed)
    shape = (work.batch, work.image_size, work.image_size, work.channels)
    return {
        "image": rng.integers(0, 256, shape, dtype=np.uint8),
        "label": rng.integers(0, work.num_classes, (work.batch,), dtype=np.int32),
    }


def prepare(work: Workload, rung: str, mesh: jax.sharding.Mesh,
            compiler_options: dict[str, str | bool | int] | None = None) -> tuple[Prepared, dict[str, float]]:
    """Builds the model of ablation rung `rung` and compiles its train step on `mesh`.

    `compiler_options` are XLA debug options (e.g. `xla_cpu_use_onednn`) for
    this compilation only, so variants can be timed in one process.
    Returns the prepared step and the seconds spent building, lowering and compiling.
    """
    timings = {}
    start = time.perf_counter()
    base = split_rung(rung)[0]
    loss = rung_loss_config(rung)
    config = model_config(work.backbone, MODEL_HEADS[base], work.width,
                          dtype=work.dtype, ghost_bn_size=work.ghost_bn_size, **dict(work.backbone_kwargs))
    with jax.threefry_partitionable(False):
        model = build_model(config, num_classes=work.num_classes, in_channels=work.channels, rngs=nnx.Rngs(0))
    optim_config = _optim_config(work.lr)
    schedule = optim.learning_rate_schedule(optim_config, global_batch_size=work.batch,
                                            steps_per_epoch=1, total_steps=1)
    tx = optim.sgd(optim_config, schedule)
    graphdef, state = create_train_state(model, tx)
    per_device = sharding.check_batch_size(work.batch, mesh)
    step_config = StepConfig(
        loss_weights=HEAD_LADDER[base],
        ss2_form=loss["ss2_form"] if HEAD_LADDER[base]["ss2"] else None,
        paste_clean_fraction=loss["paste_clean_fraction"],
        paste_clean_scale=loss["paste_clean_scale"],
        mean=(0.5,) * work.channels,
        std=(0.25,) * work.channels,
        grid_hw=output_grid(graphdef, state, (work.image_size, work.image_size, work.channels)),
        cutmix_beta=1.0,
        cutmix_prob=work.cutmix_prob,
        cutmix_group_size=work.cutmix_group_size or per_device // work.grad_accum_steps,
        dtype=DTYPES[work.dtype],
        eval_cutmix_maps=False,  # the train step does not evaluate
        grad_accum_steps=work.grad_accum_steps,
        grad_accum_unroll=work.grad_accum_unroll,
    )
    state = jax.device_put(state, sharding.replicated(mesh))
    batch = sharding.global_batch(host_batch(work), mesh)
    key = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
    jax.block_until_ready(state)
    timings["build_s"] = time.perf_counter() - start

    start = time.perf_counter()
    lowered = make_train_step(graphdef, tx, schedule, step_config, mesh).lower(state, batch, key)
    timings["lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile(compiler_options)
    timings["compile_s"] = time.perf_counter() - start
    return Prepared(compiled, state, batch, key), timings


def time_alternating(runs: dict[str, Callable[[int], object]], batch: int, *, reps: int,
                     steps: int) -> dict[str, dict]:
    """Times `run(steps)` of each entry of `runs`, `reps` times in turn.

    Alternating spreads drifting machine load evenly over the entries; each
    repetition starts one entry later, so that no entry always follows the
    same one (threads an entry leaves spinning slow down the next). Returns
    per entry img/s (median, min, max, samples), ms per step and the
    process's CPU ms per step.
    """
    samples = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            run = runs[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            run(steps)
            samples[name].append(batch * steps / (time.perf_counter() - start))
            cpu[name].append((time.process_time() - start_cpu) / steps)
    return {
        name: {
            "img_per_s_median": statistics.median(s),
            "img_per_s_min": min(s),
            "img_per_s_max": max(s),
            "step_ms_median": 1000 * batch / statistics.median(s),
            "cpu_ms_per_step_median": 1000 * statistics.median(cpu[name]),
            "samples_img_per_s": s,
        }
        for name, s in samples.items()
    }


def measure(work: Workload, *, devices: int = 0, reps: int = 5, steps: int = 5, warmup: int = 2,
            rungs: tuple[str, ...] = VARIANTS) -> dict:
    """Interleaved timing of the ablation rungs `rungs` (which must include VARIANTS).

    Returns per-rung timings and the SAOL + SS + SD vs GAP-FC comparison.
    """
    mesh = sharding.make_mesh(devices or None)
    load_before = os.getloadavg()[0]
    prepared, compile_times = {}, {}
    for rung in rungs:
        prepared[rung], compile_times[rung] = prepare(work, rung, mesh)
        prepared[rung].run(warmup)
    timed = time_alternating({rung: p.run for rung, p in prepared.items()}, work.batch, reps=reps, steps=steps)
    variants = {rung: {"ss2_form": rung_form(rung), "loss": rung_loss_config(rung), **compile_times[rung],
                       **timed[rung]} for rung in rungs}
    ratio = variants["saol_ss_sd"]["img_per_s_median"] / variants["gap"]["img_per_s_median"]
    cpu_ratio = variants["gap"]["cpu_ms_per_step_median"] / variants["saol_ss_sd"]["cpu_ms_per_step_median"]
    result = {
        "workload": dataclasses.asdict(work),
        "device_kind": jax.devices()[0].device_kind,
        "devices": mesh.devices.size,
        "per_device_batch": work.batch // mesh.devices.size,
        "reps": reps,
        "steps_per_rep": steps,
        "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
        "variants": variants,
        "saol_over_gap_throughput": ratio,
        "saol_over_gap_throughput_cpu_time": cpu_ratio,
        "goals": {
            "saol_within_5pct": {"limit": 1 - SAOL_SLOWDOWN_GOAL, "measured": ratio,
                                 "met": ratio >= 1 - SAOL_SLOWDOWN_GOAL},
        },
    }
    if work.backbone == "resnet56":
        slowest = min(v["img_per_s_median"] for v in variants.values())
        result["goals"]["resnet56_img_per_s"] = {"limit": RESNET56_IMG_S_GOAL, "measured": slowest,
                                                 "met": slowest >= RESNET56_IMG_S_GOAL}
    return result


def table(result: dict) -> str:
    """The markdown table of a step_time result: one row per timed rung."""
    rows = []
    for rung, v in result["variants"].items():
        rows.append([
            variant_name(rung, v), result["devices"], result["per_device_batch"],
            f"{v['img_per_s_median']:.1f}", f"{v['img_per_s_min']:.1f}-{v['img_per_s_max']:.1f}",
            f"{v['step_ms_median']:.0f}", f"{v['cpu_ms_per_step_median']:.0f}", f"{v['compile_s']:.1f}",
        ])
    return format_table(["head", "devices", "batch/device", "img/s (median)", "img/s (min-max)",
                         "ms/step", "CPU ms/step", "compile s"], rows)


def report(result: dict) -> None:
    work = result["workload"]
    load = result["load_average_1m"]
    print(f"{work['backbone']}, global batch {work['batch']}, {work['image_size']}x{work['image_size']}, "
          f"{work['dtype']}, K={work['num_classes']}, {result['reps']} reps x {result['steps_per_rep']} steps, "
          f"load average {load['start']:.1f} -> {load['end']:.1f} on {os.cpu_count()} cores")
    print(table(result))
    print(f"{rung_name('saol_ss_sd')} / GAP-FC throughput: {result['saol_over_gap_throughput']:.3f} (wall), "
          f"{result['saol_over_gap_throughput_cpu_time']:.3f} (CPU time)")
    for name, goal in result["goals"].items():
        print(f"goal {name}: measured {goal['measured']:.3f}, limit {goal['limit']}: "
              f"{'met' if goal['met'] else 'MISSED'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Workload()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=0, help="fake CPU devices (0: leave jax's default)")
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="global batch")
    parser.add_argument("--image_size", type=int, default=defaults.image_size)
    parser.add_argument("--num_classes", type=int, default=defaults.num_classes)
    parser.add_argument("--channels", type=int, default=defaults.channels)
    parser.add_argument("--backbone_kwargs", type=json.loads, default={},
                        help='JSON, e.g. \'{"depth": 10, "widths": [16, 32, 64, 128]}\'')
    parser.add_argument("--width", type=int, default=defaults.width, help="SAOL C_att = C_mid")
    parser.add_argument("--dtype", default=defaults.dtype, choices=sorted(DTYPES))
    parser.add_argument("--ghost_bn_size", type=int, default=defaults.ghost_bn_size,
                        help="BatchNorm statistics over groups of this many samples (0: global batch)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    parser.add_argument("--rungs", default=",".join(VARIANTS),
                        help=f"ablation rungs to time, among {','.join(RUNG_NAMES)}, each optionally "
                             f"@<SS-2 form> ({','.join(RUNG_FORMS)}; without one: the recipes' "
                             f"{BASE_LOSS['ss2_form']}); must include gap,saol_ss_sd")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (for tests)")
    parser.add_argument("--out", default=default_out("step_time"))
    args = parser.parse_args(argv)
    try:
        args.rungs = parse_rungs(args.rungs, VARIANTS)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sharding.configure_cpu_devices(args.devices)
    work = TINY if args.tiny else Workload(
        backbone=args.backbone, batch=args.batch, image_size=args.image_size,
        num_classes=args.num_classes, width=args.width, dtype=args.dtype, ghost_bn_size=args.ghost_bn_size,
        channels=args.channels,
        backbone_kwargs=frozen_kwargs(args.backbone_kwargs),
    )
    result = measure(work, devices=args.devices, reps=args.reps, steps=args.steps, rungs=args.rungs)
    report(result)
    publish(args.out, result)
    return result


if __name__ == "__main__":
    main()
