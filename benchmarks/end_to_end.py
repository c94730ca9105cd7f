"""A recipe end to end (default `configs/fashion_mnist.py`): wall time, time to the first evaluation, accuracy.

    python -m benchmarks.end_to_end [--tiny] [--recipe configs/NAME.py] [--backend tfdata|grain]
                                    [--dataset NAME] [--data_dir DIR] [--out PATH]

Runs `saol_jax.core.trainer.train_and_evaluate` in a temporary workdir that is
deleted afterwards (`--tiny`: the recipe's `smoke` option; `--backend`: the
input path, default the recipe's). The time to the first evaluation is that
of the first `val` or `eval` event in the run's metrics.jsonl, counted from
the start of training (compilation included). The training stack needs
ml-collections and tensorflow-datasets, tf.data also TensorFlow, and a
prepared dataset; where one is missing the JSON says why the run was skipped
and the command still succeeds, so an accelerator check goes on.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import tempfile
import time

from benchmarks import default_out, publish

REQUIRED_MODULES = ("tensorflow_datasets", "ml_collections")
DEFAULT_RECIPE = "configs/fashion_mnist.py"


def missing_modules(backend: str | None = None) -> list[str]:
    """The training stack's modules that this Python cannot import (TensorFlow unless `backend` is grain)."""
    names = REQUIRED_MODULES + (() if backend == "grain" else ("tensorflow",))
    return [name for name in names if importlib.util.find_spec(name) is None]


def first_eval_s(events: list[dict]) -> float | None:
    """Seconds from the start of training to the first evaluation's event (None without one)."""
    times = [e["time"] for e in events if e.get("event") in ("val", "eval") and "time" in e]
    return times[0] if times else None


def run(*, tiny: bool, dataset: str | None, data_dir: str | None, recipe: str = DEFAULT_RECIPE,
        backend: str | None = None) -> dict:
    """Trains `recipe` once; returns wall time, time to the first evaluation and final eval metrics,
    or why it was skipped."""
    missing = missing_modules(backend)
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed"}
    from saol_jax import data
    from saol_jax.core.metrics import read_events
    from saol_jax.core.trainer import train_and_evaluate

    module = importlib.import_module("configs." + os.path.splitext(os.path.basename(recipe))[0])
    config = module.get_config("smoke" if tiny else None)
    if backend:
        config.dataset.backend = backend
    if dataset:
        config.dataset.name = dataset
    if data_dir:
        config.dataset.data_dir = data_dir
    try:
        data.load_info(config.dataset)
    except data.DatasetNotFoundError as error:
        return {"skipped": f"dataset not prepared: {error}"}
    with tempfile.TemporaryDirectory(prefix="saol_e2e_") as workdir:
        start = time.perf_counter()
        metrics = train_and_evaluate(config, workdir)
        wall = time.perf_counter() - start
        events = read_events(workdir)
    return {
        "config": recipe + (":smoke" if tiny else ""),
        "dataset": config.dataset.name,
        "backend": config.dataset.backend,
        "batch_size": config.batch_size,
        "steps": config.num_train_steps,
        "wall_s": wall,
        "first_eval_s": first_eval_s(events),
        "eval": metrics,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the recipe's smoke variant (for tests)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="a recipe file under configs/")
    parser.add_argument("--backend", choices=("tfdata", "grain"), default=None,
                        help="dataset.backend (default: the recipe's)")
    parser.add_argument("--dataset", default=None, help="another tfds dataset name (default: the recipe's)")
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default: the recipe's)")
    parser.add_argument("--out", default=default_out("end_to_end"))
    args = parser.parse_args(argv)
    result = run(tiny=args.tiny, dataset=args.dataset, data_dir=args.data_dir, recipe=args.recipe,
                 backend=args.backend)
    if "skipped" in result:
        print(f"end to end: skipped ({result['skipped']})")
    else:
        evals = result["eval"]
        first = result["first_eval_s"]
        print(f"end to end: {result['config']} ({result['backend']}) in {result['wall_s']:.1f} s, first "
              f"evaluation after {'-' if first is None else f'{first:.1f}'} s, "
              f"top-1 SAOL {evals.get('eval/saol_top1', float('nan')):.4f}, "
              f"GAP-FC {evals.get('eval/gap_top1', float('nan')):.4f}")
    publish(args.out, result)
    return result


if __name__ == "__main__":
    main()
    from saol_jax.core import faults

    faults.exit_within(0, 5.0)  # orbax's threads can keep a finished process alive; the JSON is written
