"""Evaluates a saved checkpoint of a run on any split of its dataset, without training.

    python -m saol_jax.evaluate --workdir DIR [--split SPLIT] [--step N] [--out FILE.json]

Reports what the trainer logs at an evaluation (`saol_jax.metrics`): top-1,
top-5 and loss of the SAOL output and of the GAP-FC branch, `eval/count`,
on a dataset with true boxes the localisation scores of every map
(`eval/loc_<map>_pointing|mass_ratio|maxboxacc_v2|maxboxacc_50|top1_loc|...`, see
`saol_jax.localization`) and, when the run measures them, the CutMix-map
figures. `--split` is any split (or tfds split expression such as
`train[:10%]`) of the run's dataset, default the run's eval split; `--step`
any saved checkpoint, default the newest. The same code as the trainer's
evaluation computes the numbers (`saol_jax.evaluation`), so the run's eval
split at its last step gives the last eval event of its metrics.jsonl. It
prints the metrics and writes them as JSON (default
`DIR/evaluate_<split>_step<N>.json`).
"""

from __future__ import annotations

import re

import jax
from absl import app, flags

from saol_jax import data, evaluation, paths, sharding
from saol_jax.config_check import parse_flags_or_exit
from saol_jax.data.info import num_examples
from saol_jax.restore import NoCheckpointError, UnknownStepError, load_trained, output_path, read_config, use_run_devices


class UnknownSplitError(ValueError):
    """The dataset has no such split; the message lists its splits."""


def check_split(dataset_config, split: str) -> None:
    """Raises UnknownSplitError, naming the dataset's splits, unless `split` can be read."""
    builder = data.open_builder(dataset_config)
    try:
        num_examples(builder, split)
    except ValueError:
        raise UnknownSplitError(f"{builder.name} has no split {split!r}; its splits: "
                                f"{', '.join(sorted(builder.info.splits))}") from None


def evaluate(workdir: str, split: str | None = None, step: int | None = None) -> dict:
    """{'workdir', 'dataset', 'split', 'step', 'eval/...': value} of the checkpoint at `step`
    (default: the newest) on `split` (default: the run's eval split)."""
    config = read_config(workdir)
    if split:
        check_split(config.dataset, split)
    trained = load_trained(workdir, {"eval_split": split} if split else None, step)
    mesh = evaluation.eval_mesh(trained.config)
    batches = (
        sharding.global_batch(batch, mesh)
        for batch in data.eval_batches(trained.config.dataset, global_batch_size=trained.config.eval_batch_size,
                                       process_index=0, process_count=1)
    )
    params, batch_stats = jax.device_put((trained.params, trained.batch_stats), sharding.replicated(mesh))
    metrics = evaluation.eval_metrics(evaluation.eval_step_for(trained, mesh), params, batch_stats, batches)
    return {"workdir": paths.resolve(workdir), "dataset": trained.info.name, "split": trained.info.eval_split,
            "step": trained.step, **metrics}


def default_name(split: str, step: int) -> str:
    """`evaluate_<split>_step<N>.json`, the split's characters outside [A-Za-z0-9_.-] as '_'."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_") or "split"
    return f"evaluate_{safe}_step{step}.json"


def table(results: dict) -> str:
    """The results as aligned `name  value` lines under a heading."""
    metrics = {k: v for k, v in results.items() if k.startswith("eval/")}
    width = max(len(k) for k in metrics)
    lines = [f"{results['dataset']} {results['split']}, step {results['step']}:"]
    lines += [f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items()]
    return "\n".join(lines)


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    flags.DEFINE_string("workdir", None, "A training run's workdir.")
    flags.DEFINE_string("split", None, "Split of the run's dataset (default: the run's eval split).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    flags.DEFINE_string("out", None, "JSON file (default WORKDIR/evaluate_<split>_step<N>.json).")
    flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = flags.FLAGS
    try:
        use_run_devices(args.workdir)
        results = evaluate(args.workdir, args.split, args.step)
    except (FileNotFoundError, NoCheckpointError, UnknownSplitError, UnknownStepError,
            data.DatasetNotFoundError, data.DatasetFormatError) as error:
        raise SystemExit(f"error: {error}") from None
    out = output_path(args.out, args.workdir, default_name(results["split"], results["step"]))
    paths.write_json(out, results)
    print(table(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)
