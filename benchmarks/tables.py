"""Benchmark tables rendered from their result files, and markdown files kept equal to them.

    python -m benchmarks.tables --update FILE [--root benchmarks/results]   rewrite FILE's marked regions
    python -m benchmarks.tables --check FILE [--root benchmarks/results]    one line per mismatch, exit 1 if any

A marked region holds one table of kind KIND (a key of KINDS) rendered from the
result files FILE,... (comma separated, relative to the root):

    <!-- bench: KIND FILE[,FILE...] -->
    ...
    <!-- /bench -->

The markers are not saol_jax.studies.report's (`results:`), so each command
reads only its own regions; the reading, rewriting and checking of regions
is report's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence

from benchmarks import RESULTS_DIR, accelerator, format_table, grad_accum, head_cost, memory, scaling, step_time
from saol_jax.core.ladder import BASE_LOSS, split_rung
from saol_jax.studies import report

OPEN = re.compile(r"<!-- bench: (?P<name>(?P<kind>\w+)(?: (?P<files>[^\s>]+))?) -->\n")
CLOSE = "<!-- /bench -->"
TAG = "bench"
SHOWN_ROOT = "benchmarks/results"  # how a table names the folder of its result files

# What the SS-2 cost table says of each cheaper `paste` target (saol_jax.core.ladder.PASTE_VARIANTS).
FORM_NOTES = {
    "paste": "extra forward pass",
    "paste_self": "targets from the mixed image's own forward",
    "paste_quarter": "extra pass on a quarter of the examples and their partners",
    "paste_halfres": "extra pass at half resolution",
}
BACKBONE_NAMES = {"vit_base_patch16": "ViT-B/16", "convnext_tiny": "ConvNeXt-T"}


class TableError(ValueError):
    """A marker, kind or result file that cannot be rendered."""


def cells(table: str) -> tuple[list[str], list[list[str]]]:
    """The header and body cells of a markdown table written by benchmarks.format_table."""
    lines = [line[2:-2].split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return lines[0], lines[1:]


def columns(table: str, keep: dict[str, str]) -> str:
    """The columns of `table` that `keep` names (its header -> the header shown), in `keep`'s order."""
    headers, rows = cells(table)
    index = [headers.index(h) for h in keep]
    return format_table(list(keep.values()), [[row[i] for i in index] for row in rows])


def _gap_cpu_ms(result: dict) -> float:
    return result["variants"]["gap"]["cpu_ms_per_step_median"]


def step_time_vs_gap(result: dict) -> str:
    """step_time's table with each rung's CPU time per step over GAP-FC's."""
    headers, rows = cells(step_time.table(result))
    ratios = [v["cpu_ms_per_step_median"] / _gap_cpu_ms(result) for v in result["variants"].values()]
    return format_table([*headers, "CPU time / GAP-FC"], [[*row, f"{r:.2f}"] for row, r in zip(rows, ratios)])


def _spaced(rung: str) -> str:
    """'SAOL + SS + SD': the rung's head as prose writes it."""
    return step_time.RUNG_NAMES[split_rung(rung)[0]].replace("+", " + ")


def ss2_cost(result: dict) -> str:
    """Each rung's CPU ms per step and its change against GAP-FC + CutMix, named by its SS-2 form."""
    rows = []
    for rung, v in result["variants"].items():
        form = step_time.variant_form(rung, v)
        if form is None:
            head = _spaced(rung) + (" + CutMix" if result["workload"]["cutmix_prob"] > 0 else "")
        else:
            note = "the default" if form == BASE_LOSS["ss2_form"] else FORM_NOTES.get(form)
            head = f"{_spaced(rung)}, `{form}`" + (f" ({note})" if note else "")
        change = v["cpu_ms_per_step_median"] / _gap_cpu_ms(result) - 1
        rows.append([head, f"{v['cpu_ms_per_step_median']:.0f}", "—" if rung == "gap" else f"{change:+.0%}"])
    return format_table(["head", "CPU ms/step", "vs GAP-FC"], rows)


def backbone_ratio(results: Sequence[dict], names: Sequence[str]) -> str:
    """One row per step_time file of GAP-FC against one SAOL + SS + SD rung: the backbone, the device and
    dtype, the global batch, the SS-2 form and SAOL's throughput over GAP-FC's by wall and by CPU time
    (the wall ratio is what an accelerator's user gets; on a loaded CPU host the CPU time moves less)."""
    rows = []
    for result, name in zip(results, names):
        work = result["workload"]
        backbone = BACKBONE_NAMES.get(work["backbone"], work["backbone"])
        if ["pool", "token"] in work["backbone_kwargs"]:
            backbone += ", class-token head"
        kind = result.get("device_kind", "cpu")
        device = f"{result['devices']} CPU devices" if kind == "cpu" else f"{result['devices']} x {kind}"
        (rung, variant), = ((r, v) for r, v in result["variants"].items() if r != "gap")
        form = step_time.variant_form(rung, variant)
        shown = f"`{form}`" + (" (the default)" if form == BASE_LOSS["ss2_form"] else "")
        wall = result.get("saol_over_gap_throughput")
        rows.append([backbone, f"{device}, {work.get('dtype', 'float32')}", work["batch"], shown,
                     "n/a" if wall is None else f"{wall:.2f}", f"{result['saol_over_gap_throughput_cpu_time']:.2f}",
                     f"`{SHOWN_ROOT}/{name}`"])
    return format_table(["backbone", "device", "batch", "SS-2 form", "throughput / GAP-FC (wall)",
                         "throughput / GAP-FC (CPU time)", "result file"], rows)


def torch_ratio_table(result: dict) -> str:
    """The markdown table of a torch_ratio result: JAX's entries and PyTorch's, each against the fastest
    PyTorch entry and the JAX default."""
    rows = [
        [name, f"{v['img_per_s_median']:.1f}", f"{v['img_per_s_min']:.1f}-{v['img_per_s_max']:.1f}",
         f"{v['cpu_ms_per_step_median']:.0f}", f"{v['over_torch']:.2f}", f"{v['over_jax_default']:.2f}"]
        for name, v in result["variants"].items()
    ]
    return format_table(["step", "img/s (median)", "img/s (min-max)", "CPU ms/step", "/ torch", "/ jax default"],
                        rows)


def _load(result: dict) -> str:
    return f"{result['load_average_1m']['start']:.1f} → {result['load_average_1m']['end']:.1f}"


def torch_ratio_devices(results: Sequence[dict], names: Sequence[str]) -> str:
    """One row per torch_ratio file: the device split, JAX's default step and PyTorch on one thread."""
    rows = []
    for result, name in zip(results, names):
        jax, torch = result["variants"]["jax"], result["variants"]["torch 1 thread"]
        rows.append([result["devices"], result["workload"]["batch"], result["per_device_batch"],
                     f"{jax['img_per_s_median']:.1f}", f"{jax['cpu_ms_per_step_median']:.0f}",
                     f"{jax['cpu_ms_per_step_median'] / result['workload']['batch']:.1f}",
                     f"{torch['img_per_s_median']:.1f}", f"{jax['over_torch']:.2f}", _load(result), name])
    return format_table(["devices", "global batch", "batch/device", "JAX img/s", "JAX CPU ms/step",
                         "JAX CPU ms/image", "torch 1 thread img/s", "/ torch", "load avg", "JSON"], rows)


def torch_ratio_variants(results: Sequence[dict], names: Sequence[str]) -> str:
    """Every step of several torch_ratio runs (XLA option variants), one column a run: CPU ms per step and,
    in brackets, img/s; the JAX default first, PyTorch last."""
    steps = list(dict.fromkeys(s for result in results for s in result["variants"]))
    steps = ["jax", *(s for s in steps if s != "jax" and not s.startswith("torch")),
             *(s for s in steps if s.startswith("torch"))]
    rows = []
    for s in steps:
        shown = "default" if s == "jax" else s if s.startswith("torch") else f"`{s}`"
        row = [shown]
        for result in results:
            v = result["variants"].get(s)
            row.append(f"{v['cpu_ms_per_step_median']:.0f} ({v['img_per_s_median']:.1f})" if v else "")
        rows.append(row)
    runs = [f"{os.path.splitext(name)[0].removeprefix('torch_ratio_')} (load {_load(result)})"
            for result, name in zip(results, names)]
    return format_table(["variant", *runs], rows)


def input_pipeline_table(result: dict) -> str:
    """The markdown table of an input_pipeline result: one row per backend, transform and thread or
    worker count."""
    return format_table(["backend", "transform", "threads/workers", "img/s", "img/s per core", "img per CPU s"], [
        [r["backend"], r["transform"], r.get("workers", r["threads"]), f"{r['img_per_s']:.0f}",
         f"{r['img_per_s_per_core']:.0f}", f"{r['img_per_cpu_s']:.0f}"]
        for r in result["rows"]])


def accelerator_parts(results: Sequence[dict], names: Sequence[str]) -> str:
    """The accelerator check's headline figures and goals of the parts whose files (`<part>.json`) are
    named, as its summary gives them (benchmarks.accelerator.headlines)."""
    parts = {os.path.splitext(os.path.basename(name))[0]: result for result, name in zip(results, names)}
    unknown = sorted(set(parts) - set(accelerator.HEADLINES))
    if unknown:
        raise TableError(f"not parts of the accelerator check: {', '.join(unknown)}")
    return format_table(["part", "figure", "value"], [
        [part, what, value] for part, payload in parts.items()
        for what, value in accelerator.headlines(part, payload, parts.get("step_time"))])


def timm_check(result: dict) -> str:
    """`convert_timm --check_timm --out`'s file: one row per timm model, the largest logit difference and the
    versions that gave it."""
    versions = ", ".join(f"{name} {version}" for name, version in result["versions"].items() if version)
    return format_table(["timm model", "largest absolute logit difference, ours vs timm", "versions"], [
        [f"`{name}`", f"{diff:.2e}", versions] for name, diff in result["max_abs_logit_difference"].items()])


MEMORY_COLUMNS = {"footprint MiB": "footprint MiB", "arguments MiB": "arguments MiB", "temp MiB": "temp MiB",
                  "footprint / GAP-FC": "footprint / GAP-FC"}

# Kind -> renderer of its result files (payloads in the marker's order) and their names.
KINDS: dict[str, Callable[[Sequence[dict], Sequence[str]], str]] = {
    "step_time": lambda r, _: step_time.table(r[0]),
    "step_time_vs_gap": lambda r, _: step_time_vs_gap(r[0]),
    "ss2_cost": lambda r, _: ss2_cost(r[0]),
    "backbone_ratio": backbone_ratio,
    "head_cost": lambda r, _: head_cost.table(r[0]["rows"]),
    "scaling": lambda r, _: scaling.table(r[0]),
    "grad_accum": lambda r, _: columns(grad_accum.table(r[0]), {
        h: h for h in ("k", "micro-batch/device", "ms/step", "CPU ms/step", "CPU vs k=1", "temp MiB/device",
                       "all-reduce per step", "all-reduce per micro-batch", "other collectives")}),
    "torch_ratio": lambda r, _: torch_ratio_table(r[0]),
    "timm_check": lambda r, _: timm_check(r[0]),
    "torch_ratio_devices": torch_ratio_devices,
    "torch_ratio_variants": torch_ratio_variants,
    "memory": lambda r, _: columns(memory.table(r[0]["settings"]),
                                   {"dtype": "dtype", "head": "head", **MEMORY_COLUMNS}),
    "memory_backbones": lambda r, _: columns(memory.table(r[0]["settings"]),
                                             {"setting": "backbone", "batch": "batch", "head": "head",
                                              **MEMORY_COLUMNS}),
    "accelerator": accelerator_parts,
    "input_pipeline": lambda r, _: columns(input_pipeline_table(r[0]), {
        "backend": "backend", "transform": "transform", "threads/workers": "threads / workers",
        "img/s": "img/s (wall)", "img/s per core": "img/s per core (wall)", "img per CPU s": "img per CPU s"}),
}
SINGLE_FILE = {"step_time", "step_time_vs_gap", "ss2_cost", "head_cost", "scaling", "grad_accum", "torch_ratio",
               "timm_check", "memory", "memory_backbones", "input_pipeline"}


def render(kind: str, names: Sequence[str], root: str = RESULTS_DIR) -> str:
    """The table of `kind` from the result files `names` under `root`."""
    if kind not in KINDS:
        raise TableError(f"unknown table kind {kind!r}; valid: {', '.join(KINDS)}")
    if not names:
        raise TableError(f"a {kind} table names its result files: <!-- bench: {kind} FILE[,FILE...] -->")
    if kind in SINGLE_FILE and len(names) != 1:
        raise TableError(f"a {kind} table reads one result file, got {len(names)}: {','.join(names)}")
    payloads = []
    for name in names:
        path = os.path.join(root, name)
        try:
            with open(path, encoding="utf-8") as f:
                payloads.append(json.load(f))
        except FileNotFoundError:
            raise TableError(f"no result file {path}") from None
        except ValueError as error:
            raise TableError(f"{path} is not JSON ({error})") from None
    try:
        return KINDS[kind](payloads, names)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise TableError(f"{kind} {','.join(names)}: not a {kind} result ({type(error).__name__}: {error})") from None


def _expected(match: re.Match, root: str) -> str:
    files = match.group("files")
    return render(match.group("kind"), files.split(",") if files else [], root) + "\n"


def regions(text: str) -> list[tuple[re.Match, int]]:
    """Each `bench:` region of `text`: its opening marker's match and where its closing marker starts."""
    return report.regions(text, OPEN, CLOSE)


def update(text: str, root: str = RESULTS_DIR) -> str:
    """`text` with every `bench:` region's table rendered anew from the result files under `root`."""
    return report.rendered_anew(text, lambda match: _expected(match, root), OPEN, CLOSE)


def mismatches(text: str, name: str, root: str = RESULTS_DIR) -> list[str]:
    """One line per line of a `bench:` region of `text` (the file `name`) that differs from its rendering."""
    return report.differences(text, name, lambda match: _expected(match, root), OPEN, CLOSE, TAG)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--update", metavar="FILE", help="markdown file whose bench regions are rendered anew")
    action.add_argument("--check", metavar="FILE", help="markdown file whose bench regions must equal their files")
    parser.add_argument("--root", default=RESULTS_DIR, help="folder of the result files that markers name")
    args = parser.parse_args(argv)
    path = args.update or args.check
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if args.update:
            rendered = update(text, args.root)
            with open(path, "w", encoding="utf-8") as f:
                f.write(rendered)
            print(f"rendered {len(regions(text))} table(s) of {path}")
            return 0
        problems = mismatches(text, path, args.root)
    except (TableError, report.ReportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{path}: every benchmark table equals its result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
