"""Compiled peak memory of the train step, GAP-FC vs SAOL + SS + SD.

    python -m benchmarks.memory [--settings resnet50_fp32,resnet50_bf16,cifar] [--rungs gap,saol_ss_sd]
                                [--tiny] [--out PATH]

Rungs are named as in `benchmarks.step_time`: `<rung>[@<SS-2 form>]`, the recipes' default form
(`saol_jax.core.ladder.BASE_LOSS`) where none is given; every row names the form its step ran.

Each figure is XLA's memory analysis of the real jitted train step
(`benchmarks.step_time.prepare`: CutMix on device, every loss term of the
rung, SGD update, state donated) compiled for one device of the default
backend; nothing is run. "footprint" = arguments + outputs - aliased
(donated) + temp, from XLA's buffer assignment: what the step holds at
most, on every backend; the SAOL/GAP-FC ratio uses it. XLA's own
`peak_memory_in_bytes` (live buffers at the worst point of the schedule) is
reported beside it; the CPU backend leaves temp out of it. The JSON is
rewritten after every setting, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax

from benchmarks import default_out, format_table, write_json
from benchmarks.step_time import TINY, VARIANTS, Workload, parse_rungs, prepare, rung_form, variant_name
from saol_jax.core import sharding

SAOL_MEMORY_GOAL = ("resnet50", 0.05)  # the SAOL step needs <= 5% more memory than GAP-FC

# ResNet-50 at the ImageNet recipe's 224^2, K = 1000, C_att = C_mid = 256; the CIFAR
# recipes' backbones at their config batch sizes, K = 100, C_att = C_mid = 128, float32.
SETTINGS: dict[str, Workload] = {
    "resnet50_fp32": Workload(backbone="resnet50", batch=64, image_size=224, num_classes=1000, width=256),
    "resnet50_bf16": Workload(backbone="resnet50", batch=64, image_size=224, num_classes=1000, width=256,
                              dtype="bfloat16"),
    "resnet110": Workload(backbone="resnet110", batch=128),
    "wrn28_10": Workload(backbone="wrn28_10", batch=128, backbone_kwargs=(("dropout_rate", 0.0),)),
    "pyramidnet200_a240": Workload(backbone="pyramidnet200_a240", batch=64),
}
GROUPS = {"cifar": ("resnet110", "wrn28_10", "pyramidnet200_a240")}
TINY_SETTINGS = {"tiny": TINY}

_FIELDS = ("peak_memory_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
           "alias_size_in_bytes", "temp_size_in_bytes")


def compiled_memory(compiled: jax.stages.Compiled) -> dict[str, int]:
    """XLA's memory figures (bytes, per device) of a compiled computation."""
    stats = compiled.memory_analysis()
    figures = {name: int(getattr(stats, name)) for name in _FIELDS}
    figures["footprint_bytes"] = (figures["argument_size_in_bytes"] + figures["output_size_in_bytes"]
                                  - figures["alias_size_in_bytes"] + figures["temp_size_in_bytes"])
    return figures


def step_memory(work: Workload, rungs: tuple[str, ...], mesh: jax.sharding.Mesh) -> dict:
    """Memory of the train step of each rung on `work`, and SAOL + SS + SD over GAP-FC."""
    rows = {}
    for rung in rungs:
        prepared, timings = prepare(work, rung, mesh)
        rows[rung] = {"ss2_form": rung_form(rung), **compiled_memory(prepared.step),
                      "compile_s": timings["compile_s"]}
        del prepared  # frees the state before the next rung is built
    result = {"workload": dataclasses.asdict(work), "rungs": rows}
    if set(VARIANTS) <= set(rungs):
        result["saol_over_gap_footprint"] = (rows["saol_ss_sd"]["footprint_bytes"]
                                             / rows["gap"]["footprint_bytes"])
    return result


def table(results: dict[str, dict]) -> str:
    rows = []
    for name, result in results.items():
        gap = result["rungs"].get("gap", {}).get("footprint_bytes")
        for rung, mem in result["rungs"].items():
            ratio = f"{mem['footprint_bytes'] / gap:.4f}" if gap else "-"
            rows.append([name, result["workload"]["batch"], result["workload"]["dtype"], variant_name(rung, mem),
                         f"{mem['footprint_bytes'] / 2**20:.1f}", f"{mem['argument_size_in_bytes'] / 2**20:.1f}",
                         f"{mem['temp_size_in_bytes'] / 2**20:.1f}", f"{mem['peak_memory_in_bytes'] / 2**20:.1f}",
                         ratio])
    return format_table(["setting", "batch", "dtype", "head", "footprint MiB", "arguments MiB", "temp MiB",
                         "XLA peak MiB", "footprint / GAP-FC"], rows)


def goals(results: dict[str, dict]) -> dict[str, dict]:
    """The 5% memory bar on every measured setting of SAOL_MEMORY_GOAL's backbone."""
    backbone, limit = SAOL_MEMORY_GOAL
    return {
        f"{name}_saol_memory_within_5pct": {"limit": 1 + limit, "measured": r["saol_over_gap_footprint"],
                                           "met": r["saol_over_gap_footprint"] <= 1 + limit}
        for name, r in results.items()
        if r["workload"]["backbone"] == backbone and "saol_over_gap_footprint" in r
    }


def run(settings: dict[str, Workload], rungs: tuple[str, ...], out: str) -> dict:
    """Measures every setting on one device, rewriting the JSON after each; returns the payload."""
    mesh = sharding.make_mesh(1)
    payload = {"what": __doc__.split("\n")[0], "device": str(jax.devices()[0].device_kind), "settings": {}}
    for name, work in settings.items():
        print(f"compiling {name} ({', '.join(rungs)}) ...", flush=True)
        payload["settings"][name] = step_memory(work, rungs, mesh)
        payload["goals"] = goals(payload["settings"])
        write_json(out, payload)
    print(table(payload["settings"]))
    for name, goal in payload["goals"].items():
        print(f"goal {name}: {goal['measured']:.4f} (limit {goal['limit']}): {'met' if goal['met'] else 'MISSED'}")
    print(f"wrote {out}")
    return payload


def parse_settings(names: str) -> dict[str, Workload]:
    """'resnet50_bf16,cifar' -> the named settings, groups expanded, in the given order."""
    chosen = {}
    for name in names.split(","):
        for item in GROUPS.get(name, (name,)):
            if item not in SETTINGS:
                raise ValueError(f"unknown setting {item!r}; valid: {', '.join([*SETTINGS, *GROUPS])}")
            chosen[item] = SETTINGS[item]
    return chosen


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated, among {', '.join([*SETTINGS, *GROUPS])}")
    parser.add_argument("--rungs", default=",".join(VARIANTS),
                        help="ablation rungs, each optionally @<SS-2 form>, as in benchmarks.step_time")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (for tests)")
    parser.add_argument("--out", default=default_out("memory"))
    args = parser.parse_args(argv)
    try:
        rungs = parse_rungs(args.rungs)
    except ValueError as error:
        parser.error(str(error))
    settings = TINY_SETTINGS if args.tiny else parse_settings(args.settings)
    return run(settings, rungs, args.out)


if __name__ == "__main__":
    main()
