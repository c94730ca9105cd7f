"""Collects the parts of `benchmarks/accelerator.sh` into one JSON and one markdown table.

    python -m benchmarks.accelerator OUT_DIR [PART=STATUS:SECONDS ...]

Each part has written `<part>.json` into OUT_DIR (or nothing, if it failed
or was skipped); STATUS is the part's exit code, `timeout`, or
`skipped` with a reason after a colon (`end_to_end=skipped:no tensorflow`).
Writes OUT_DIR/accelerator.json (every part's payload and status) and
OUT_DIR/accelerator.md (the headline figures) and prints the table.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

from benchmarks import PRE_FORMS_SS2, format_table, write_json

PARTS = ("grain_prepare", "grain_default", "grain_localisation", "step_time", "torch_peer", "memory",
         "input_pipeline", "end_to_end")
GRAIN_PARTS = PARTS[:3]  # only with `accelerator.sh --grain`: left out of the summary when not run
TIMEOUT_EXIT_CODES = ("124", "137")


def parse_status(item: str) -> tuple[str, dict[str, object]]:
    """'memory=0:81' -> ('memory', {'status': 'ok', 'seconds': 81.0}); skips and failures likewise."""
    name, _, rest = item.partition("=")
    if rest.startswith("skipped:"):
        return name, {"status": rest, "seconds": 0.0}
    code, _, seconds = rest.rpartition(":")
    status = "ok" if code == "0" else "timed out" if code in TIMEOUT_EXIT_CODES else f"failed (exit {code})"
    return name, {"status": status, "seconds": float(seconds)}


def _saol(entry: dict) -> str:
    """'SAOL+SS+SD (paste)': the rung with the SS-2 form its step ran (results before forms were recorded:
    PRE_FORMS_SS2)."""
    return f"SAOL+SS+SD ({entry.get('ss2_form') or PRE_FORMS_SS2})"


def _step_time(p: dict) -> list[tuple[str, str]]:
    w, v = p["workload"], p["variants"]
    setting = (f"{w['backbone']} {w['image_size']}² {w['dtype']}, batch {w['batch']} "
               f"on {p['devices']} x {p['device_kind']}")
    return [
        (f"GAP-FC img/s ({setting})", f"{v['gap']['img_per_s_median']:.1f}"),
        (f"{_saol(v['saol_ss_sd'])} img/s", f"{v['saol_ss_sd']['img_per_s_median']:.1f}"),
        (f"{_saol(v['saol_ss_sd'])} / GAP-FC throughput", f"{p['saol_over_gap_throughput']:.3f}"),
    ] + [
        (f"{_saol(v['saol_ss_sd'])} / GAP-FC throughput by CPU time", f"{p[key]:.3f}")
        for key in ("saol_over_gap_throughput_cpu_time",) if key in p
    ] + [
        (f"{_saol(entry)} img/s (/ GAP-FC)", f"{entry['img_per_s_median']:.1f} "
                                            f"({entry['img_per_s_median'] / v['gap']['img_per_s_median']:.3f})")
        for rung, entry in v.items() if rung not in ("gap", "saol_ss_sd")
    ]


def _torch_peer(p: dict) -> list[tuple[str, str]]:
    w = p["workload"]
    return [(f"PyTorch {mode} GAP-FC img/s ({w['arch']} {w['image_size']}² {w['dtype']}, batch {w['batch']}, "
             f"torch {p['torch']})", f"{v['img_per_s_median']:.1f}") for mode, v in p["variants"].items()]


def versus_torch(step_time: dict, torch_peer: dict) -> list[tuple[str, str]]:
    """JAX img/s of every step_time rung over the fastest PyTorch GAP-FC mode."""
    mode, best = max(torch_peer["variants"].items(), key=lambda item: item[1]["img_per_s_median"])
    return [(f"JAX {'GAP-FC' if rung == 'gap' else _saol(entry)} / PyTorch {mode} GAP-FC",
             f"{entry['img_per_s_median'] / best['img_per_s_median']:.3f}")
            for rung, entry in step_time["variants"].items()]


def _memory(p: dict) -> list[tuple[str, str]]:
    rows = []
    for name, s in p["settings"].items():
        gap, saol = s["rungs"].get("gap"), s["rungs"].get("saol_ss_sd")
        if gap and saol:
            rows.append((f"{name} footprint MiB GAP-FC / {_saol(saol)} (batch {s['workload']['batch']})",
                         f"{gap['footprint_bytes'] / 2**20:.1f} / {saol['footprint_bytes'] / 2**20:.1f} "
                         f"(x{s['saol_over_gap_footprint']:.3f})"))
    return rows


def _input_pipeline(p: dict) -> list[tuple[str, str]]:
    return [(f"{r.get('backend', 'tfdata')} {r['transform']} img/s, {r['threads']} thread(s)",
             f"{r['img_per_s']:.0f} ({r['img_per_s'] / r['threads']:.0f} per core)") for r in p["rows"]] + [
        (f"fused / plain train, {threads} thread(s)", f"{ratio:.2f}")
        for threads, ratio in p["fused_over_plain"].items()
    ]


def _end_to_end(p: dict) -> list[tuple[str, str]]:
    e, first = p["eval"], p.get("first_eval_s")
    return [(f"{p['config']} ({p.get('backend', 'tfdata')}) wall s", f"{p['wall_s']:.1f}"),
            ("first evaluation after s", "-" if first is None else f"{first:.1f}"),
            ("test top-1 SAOL / GAP-FC", f"{e.get('eval/saol_top1', float('nan')):.4f} / "
                                         f"{e.get('eval/gap_top1', float('nan')):.4f}")]


HEADLINES: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "step_time": _step_time, "torch_peer": _torch_peer, "input_pipeline": _input_pipeline,
    "end_to_end": _end_to_end, "memory": _memory, "grain_default": _end_to_end, "grain_localisation": _end_to_end,
}


def headlines(name: str, payload: dict | None, step_time: dict | None = None) -> list[tuple[str, str]]:
    """The figures and goals of part `name`'s result `payload` (none for a part not run or skipped);
    torch_peer's also against the JAX rungs of `step_time`'s."""
    if not payload or "skipped" in payload:
        return []
    rows = HEADLINES[name](payload)
    if name == "torch_peer" and step_time:
        rows += versus_torch(step_time, payload)
    return rows + [(f"goal {goal}", f"{g['measured']:.3f} vs {g['limit']}: {'met' if g['met'] else 'MISSED'}")
                   for goal, g in payload.get("goals", {}).items()]


def read_part(out_dir: str, name: str) -> dict | None:
    path = os.path.join(out_dir, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def summarise(out_dir: str, statuses: dict[str, dict[str, object]]) -> dict:
    """Writes accelerator.json and accelerator.md into `out_dir`; returns the JSON payload."""
    parts, rows = {}, []
    for name in PARTS:
        if name in GRAIN_PARTS and name not in statuses:
            continue
        status = statuses.get(name, {"status": "not run", "seconds": 0.0})
        payload = read_part(out_dir, name)
        if payload and "skipped" in payload:
            status = {**status, "status": f"skipped:{payload['skipped']}"}
        parts[name] = {**status, "result": payload}
        headline = headlines(name, payload, parts["step_time"]["result"] if name == "torch_peer" else None)
        for what, value in headline or [("-", "-")]:
            rows.append([name, status["status"], f"{status['seconds']:.0f}", what, value])
    md = format_table(["part", "status", "s", "figure", "value"], rows)
    with open(os.path.join(out_dir, "accelerator.md"), "w", encoding="utf-8") as f:
        f.write(md + "\n")
    payload = {"parts": parts}
    write_json(os.path.join(out_dir, "accelerator.json"), payload)
    print(md)
    return payload


def main(argv: Sequence[str] | None = None) -> dict:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit(__doc__)
    return summarise(args[0], dict(parse_status(item) for item in args[1:]))


if __name__ == "__main__":
    main()
