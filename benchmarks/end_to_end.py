"""The default recipe end to end: wall time and test accuracy of `configs/fashion_mnist.py`.

    python -m benchmarks.end_to_end [--tiny] [--dataset NAME] [--data_dir DIR] [--out PATH]

Runs `saol_jax.core.trainer.train_and_evaluate` in a temporary workdir that is
deleted afterwards (`--tiny`: the recipe's `smoke` option). The training
stack needs TensorFlow and a prepared dataset; where either is missing the
JSON says why the run was skipped and the command still succeeds, so an
accelerator check on a machine without TensorFlow goes on.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time

from benchmarks import default_out, write_json

REQUIRED_MODULES = ("tensorflow", "tensorflow_datasets", "ml_collections")


def missing_modules() -> list[str]:
    """The training stack's modules that this Python cannot import."""
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def run(*, tiny: bool, dataset: str | None, data_dir: str | None) -> dict:
    """Trains the default recipe once; returns wall time and final eval metrics, or why it was skipped."""
    missing = missing_modules()
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed"}
    from configs import fashion_mnist
    from saol_jax import data
    from saol_jax.core.trainer import train_and_evaluate

    config = fashion_mnist.get_config("smoke" if tiny else None)
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
    return {
        "config": "configs/fashion_mnist.py" + (":smoke" if tiny else ""),
        "dataset": config.dataset.name,
        "batch_size": config.batch_size,
        "wall_s": wall,
        "eval": metrics,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the recipe's smoke variant (for tests)")
    parser.add_argument("--dataset", default=None, help="another tfds dataset name (default: the recipe's)")
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default: the recipe's)")
    parser.add_argument("--out", default=default_out("end_to_end"))
    args = parser.parse_args(argv)
    result = run(tiny=args.tiny, dataset=args.dataset, data_dir=args.data_dir)
    if "skipped" in result:
        print(f"end to end: skipped ({result['skipped']})")
    else:
        evals = result["eval"]
        print(f"end to end: {result['config']} in {result['wall_s']:.1f} s, "
              f"top-1 SAOL {evals.get('eval/saol_top1', float('nan')):.4f}, "
              f"GAP-FC {evals.get('eval/gap_top1', float('nan')):.4f}")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
