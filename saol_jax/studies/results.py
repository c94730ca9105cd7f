"""The result files of a study (results/README.md): one JSON file per finished run, one with the statistics.

    <results>/<rung>/seed<seed>.json   one run: recipe, config, rung, seed, step, every final metric
    <results>/study.json               the study's summaries and tests (saol_jax.studies.ablate)

Written with sorted keys, two-space indent, floats as Python's shortest exact
repr and non-finite numbers as null, so writing the same results twice gives
the same bytes and re-rendering tables from them is stable.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Mapping
from typing import Any

import numpy as np

import saol_jax
from saol_jax.core import paths

FORMAT = 1
STUDY_FILE = "study.json"
SOFTWARE_FILE = "software.json"  # in a run's workdir: the software that trained it
# Metric splits kept apart in a run file: the name in the file and the prefix of the trainer's keys.
SPLITS = {"test": "eval/", "val": "val/"}


def _plain(tree: Any) -> Any:
    """`tree` with numpy scalars as Python numbers, tuples as lists and non-finite floats as None."""
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    if isinstance(tree, (bool, np.bool_)):
        return bool(tree)
    if isinstance(tree, (int, np.integer)):
        return int(tree)
    if isinstance(tree, (float, np.floating)):
        return float(tree) if math.isfinite(tree) else None
    return tree


def dumps(payload: Any) -> str:
    """The deterministic JSON text of `payload` (module docstring), ending in a newline."""
    return json.dumps(_plain(payload), sort_keys=True, indent=2, allow_nan=False) + "\n"


def run_path(results_dir: str, rung: str, seed: int) -> str:
    return paths.join(results_dir, rung, f"seed{seed}.json")


def split_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{'eval/x': 1, 'val/x': 2, 'train/y': 3} -> {'test': {'x': 1}, 'val': {'x': 2}}: each split's metrics."""
    return {split: {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
            for split, prefix in SPLITS.items()}


def software() -> dict[str, Any]:
    """The package version and, where the package is a git checkout, its commit and whether it had edits."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(saol_jax.__file__)))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": saol_jax.__version__, "commit": commit, "dirty": None if status is None else bool(status)}


def training_software(run_dir: str, earlier_file: str | None = None) -> dict[str, Any]:
    """The software that trains (or trained) the run in `run_dir`, kept in its `software.json`.

    The first call for a run, made before it trains, records `software()`
    there, unless `earlier_file` (the run's result file from an earlier
    collection) exists: that run was trained already, and its file holds the
    software that did it. Later calls read the record back, so collecting a
    finished run again never stamps it with the code of the day.
    """
    path = paths.join(run_dir, SOFTWARE_FILE)
    if paths.exists(path):
        return paths.read_json(path)
    earlier = paths.read_json(earlier_file) if earlier_file is not None and paths.exists(earlier_file) else {}
    found = earlier["software"] if "software" in earlier else software()
    paths.write_json(path, found)
    return found


def write_run(results_dir: str, record: Mapping[str, Any]) -> str:
    """Writes one run's record (keys: rung, seed, ...) to its file; returns the path."""
    path = run_path(results_dir, record["rung"], record["seed"])
    paths.write_text(path, dumps({"format": FORMAT, **record}))
    return path


def read_runs(results_dir: str) -> list[dict[str, Any]]:
    """Every run record under `results_dir` (`<rung>/seed<seed>.json`), by rung then seed.

    Raises FileNotFoundError for a folder without run files, ValueError for a file that is not one.
    """
    results_dir = paths.resolve(results_dir)
    found = paths.glob(results_dir, "*/seed*.json")
    if not found:
        raise FileNotFoundError(f"no run files (<rung>/seed<seed>.json) in {results_dir}")
    records = []
    for path in found:
        try:
            record = json.loads(paths.read_text(path))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        if not isinstance(record, dict) or not {"rung", "seed", "metrics", "config"} <= set(record):
            raise ValueError(f"{path} is not a run file: it needs rung, seed, metrics and config")
        records.append(record)
    return sorted(records, key=lambda r: (r["rung"], r["seed"]))
