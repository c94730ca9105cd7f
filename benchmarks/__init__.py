"""Benchmarks: head cost, train-step time, multi-device scaling.

Each is run as `python -m benchmarks.<name>`, prints a table and writes JSON
(by default to `benchmarks/results/<name>.json`). The helpers here format
tables and describe the machine a result came from.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# The SS-2 form of a result entry of a rung without `@form` that does not record its own: step_time and
# memory ran it for such rungs until their entries recorded the form (2026-12-04).
PRE_FORMS_SS2 = "renorm"


def default_out(name: str) -> str:
    """benchmarks/results/<name>.json."""
    return os.path.join(RESULTS_DIR, f"{name}.json")


def machine() -> dict[str, object]:
    """CPU model, core count, Python and jax versions (jax is imported here, not initialised)."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table; floats keep the formatting the caller gave them."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> str:
    """Writes `payload` (with the machine description added) to `path`; returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2)
    os.replace(tmp, path)
    return path


def publish(path: str, payload: dict, *lines: str) -> str:
    """Prints `lines` (a heading, the table), writes `payload` to `path` (write_json) and says where."""
    for line in lines:
        print(line)
    write_json(path, payload)
    print(f"wrote {path}")
    return path
