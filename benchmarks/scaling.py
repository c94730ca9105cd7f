"""One global batch on 1, 2, 4, 8 fake CPU devices, and the input pipeline alone.

    python -m benchmarks.scaling [--devices 1,2,4,8] [--batch 64] [--backbone resnet56] [--tiny] [--out PATH]

Each device count runs in its own subprocess (jax fixes the count at start):
the SAOL + SS + SD train step on the same model, batch and CutMix draws
(CutMix groups of batch / max(devices) samples, so every split pairs the
same samples), at learning rate 0.01. The losses of the first steps must
agree across device counts (the sharded step computes the same thing); the
step time shows what sharding costs or gains. The input pipeline (`host_train_batches`,
the Fashion-MNIST recipe's augmentation) is timed alone, so data and
compute limits can be compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import default_out, format_table, publish
from benchmarks.step_time import TINY, Workload, prepare
from configs import fashion_mnist
from saol_jax import data
from saol_jax.core import sharding

LOSS_STEPS = 3
LOSS_RTOL = 1e-4
# At lr 0.1 from a random init the first steps are chaotic enough to amplify float
# reduction-order differences (1e-7 after step 1) to 1e-3 by step 3; 0.01 keeps them at 1e-5.
CHECK_LR = 0.01
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(work: Workload, devices: int, *, reps: int, steps: int) -> dict:
    """In a fresh process, on `devices` CPU devices: the first losses and the median step time."""
    sharding.configure_cpu_devices(devices)
    mesh = sharding.make_mesh(devices)
    prepared, timings = prepare(work, "saol_ss_sd", mesh)
    losses = [float(prepared.run(1)) for _ in range(LOSS_STEPS)]
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        prepared.run(steps)
        times.append((time.perf_counter() - start) / steps)
        cpu.append((time.process_time() - start_cpu) / steps)
    step_s = statistics.median(times)
    return {
        "devices": devices,
        "per_device_batch": work.batch // devices,
        "losses": losses,
        "step_ms_median": 1000 * step_s,
        "step_ms_min": 1000 * min(times),
        "step_ms_max": 1000 * max(times),
        "img_per_s": work.batch / step_s,
        "cpu_ms_per_step_median": 1000 * statistics.median(cpu),
        "load_average_1m": os.getloadavg()[0],
        **timings,
    }


def _worker_env() -> dict[str, str]:
    """The environment without a forced device count (the worker sets its own)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def run_worker(work: Workload, devices: int, *, reps: int, steps: int) -> dict:
    """Runs `worker` in a fresh process and returns its result."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--worker", str(devices),
               "--work", json.dumps(dataclasses.asdict(work)), "--reps", str(reps), "--steps", str(steps)]
    proc = subprocess.run(command, cwd=REPO, env=_worker_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker with {devices} devices failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def agreement(rows: list[dict]) -> dict:
    """Largest relative difference of each device count's first losses from the first row's."""
    reference = rows[0]["losses"]
    per_step = [
        max(abs(row["losses"][i] - ref) / max(abs(ref), 1e-12) for row in rows)
        for i, ref in enumerate(reference)
    ]
    worst = max(per_step)
    return {"reference_devices": rows[0]["devices"], "max_rel_diff_per_step": per_step,
            "max_rel_diff": worst, "rtol": LOSS_RTOL, "agree": worst <= LOSS_RTOL}


def pipeline_throughput(dataset_config, *, batch: int, batches: int) -> dict:
    """Time to the first batch (reading, decoding, caching) and img/s over the next `batches`."""
    start = time.perf_counter()
    stream = data.host_train_batches(dataset_config, global_batch_size=batch, seed=0)
    next(stream)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    elapsed = time.perf_counter() - start
    return {"dataset": dataset_config.name, "batch": batch, "first_batch_s": first,
            "img_per_s": batch * batches / elapsed, "batches": batches}


def pipeline_dataset(name: str | None, data_dir: str | None):
    """The Fashion-MNIST recipe's dataset config, pointed at `name`/`data_dir`; None if not prepared."""
    config = fashion_mnist.get_config().dataset
    config.name = name or config.name
    config.data_dir = data_dir
    try:
        data.open_builder(config)
    except data.DatasetNotFoundError as error:
        print(f"input pipeline not measured: {error}")
        return None
    return config


def table(result: dict) -> str:
    """The markdown table of a scaling result: one row per device count."""
    rows = [
        [r["devices"], r["per_device_batch"], f"{r['step_ms_median']:.0f}",
         f"{r['step_ms_min']:.0f}-{r['step_ms_max']:.0f}", f"{r['img_per_s']:.1f}",
         f"{r['cpu_ms_per_step_median']:.0f}", f"{r['compile_s']:.1f}",
         " ".join(f"{x:.6f}" for x in r["losses"]), f"{r['load_average_1m']:.1f}"]
        for r in result["devices"]
    ]
    return format_table(["devices", "batch/device", "ms/step (median)", "ms/step (min-max)", "img/s",
                         "CPU ms/step", "compile s", f"loss, steps 1-{LOSS_STEPS}", "load avg"], rows)


def tables(result: dict) -> str:
    """The table, the losses' agreement and the input pipeline's rate, as printed."""
    text = table(result)
    check = result["loss_agreement"]
    per_step = ", ".join(f"{d:.1e}" for d in check["max_rel_diff_per_step"])
    text += (f"\nlosses vs {check['reference_devices']} device(s): max relative difference per step "
             f"{per_step} (tolerance {check['rtol']:.0e}): {'agree' if check['agree'] else 'DISAGREE'}")
    pipe = result.get("pipeline")
    if pipe:
        text += (f"\ninput pipeline alone ({pipe['dataset']}, batch {pipe['batch']}): "
                 f"{pipe['img_per_s']:.0f} img/s after {pipe['first_batch_s']:.1f} s to the first batch")
        best = max(r["img_per_s"] for r in result["devices"])
        limit = "data" if pipe["img_per_s"] < best else "compute"
        text += f"; best train step {best:.1f} img/s: {limit} is the limit"
    return text


def run(work: Workload, device_counts: list[int], *, reps: int, steps: int, out: str,
        pipeline=None, pipeline_batches: int = 50) -> dict:
    """Every device count in a subprocess, the pipeline in this one; prints and writes the result."""
    work = dataclasses.replace(work, cutmix_group_size=work.batch // max(device_counts), lr=CHECK_LR)
    rows = [run_worker(work, n, reps=reps, steps=steps) for n in device_counts]
    result = {"workload": dataclasses.asdict(work), "devices": rows, "loss_agreement": agreement(rows)}
    if pipeline is not None:
        result["pipeline"] = pipeline_throughput(pipeline, batch=work.batch, batches=pipeline_batches)
    publish(out, result, tables(result))
    return result


def main(argv: list[str] | None = None) -> dict | None:
    defaults = Workload()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="global batch")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--dataset", default=None, help="tfds dataset for the pipeline (default fashion_mnist)")
    parser.add_argument("--data_dir", default=None, help="its tfds data_dir (default: tfds's)")
    parser.add_argument("--pipeline_batches", type=int, default=50)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (for tests)")
    parser.add_argument("--out", default=default_out("scaling"))
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        fields = json.loads(args.work)
        fields["backbone_kwargs"] = tuple(tuple(kv) for kv in fields["backbone_kwargs"])
        print(json.dumps(worker(Workload(**fields), args.worker, reps=args.reps, steps=args.steps)))
        return None
    work = TINY if args.tiny else dataclasses.replace(defaults, backbone=args.backbone, batch=args.batch)
    return run(work, [int(n) for n in args.devices.split(",")], reps=args.reps, steps=args.steps, out=args.out,
               pipeline=pipeline_dataset(args.dataset, args.data_dir), pipeline_batches=args.pipeline_batches)


if __name__ == "__main__":
    main()
