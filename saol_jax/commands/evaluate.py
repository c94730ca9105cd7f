"""Evaluates a saved checkpoint of a run on any split of its dataset, without training.

    python -m saol_jax.commands.evaluate --workdir DIR [--split SPLIT] [--step N] [--out FILE.json]

Reports what the trainer logs at an evaluation (`saol_jax.core.metrics`): top-1,
top-5 and loss of the SAOL output and of the GAP-FC branch, `eval/count`,
on a dataset with true boxes the localisation scores of every map
(`eval/loc_<map>_pointing|mass_ratio|maxboxacc_v2|maxboxacc_50|top1_loc|...`, see
`saol_jax.core.localisation`) and, when the run measures them, the CutMix-map
figures. `--split` is `validation` (the run's `dataset.validation_split`,
where choices are made), `test` (the run's eval split, the default) or any
other split (or tfds split expression such as `train[:10%]`) of the run's
dataset; a dataset's own split named `validation` or `test` that is not the
run's is read with a slice such as `validation[:]`. `--step` is any saved
checkpoint, default the newest. The same code as the trainer's evaluation
computes the numbers (`saol_jax.core.evaluation`), so `test` at the last step
gives the last eval event of the run's metrics.jsonl, and `validation` its
last val event (under `eval/` names in this command's output). It prints the metrics and writes
them as JSON with the split read and its role (default
`DIR/evaluate_<role or split>_step<N>.json`).
"""

from __future__ import annotations

import re

import jax
from absl import flags

from saol_jax import data
from saol_jax.commands import cli
from saol_jax.core import evaluation, paths, sharding
from saol_jax.core.restore import NoCheckpointError, UnknownStepError, load_trained, output_path, read_config, use_run_devices
from saol_jax.data.info import num_examples
from saol_jax.data.padded_eval import scores_boxes


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


def resolve_split(workdir: str, info: data.DatasetInfo, split: str) -> tuple[str, str | None]:
    """(tfds split, role) that `--split` names: the roles 'validation' and 'test' stand for the
    run's validation and eval splits; any other split is read as given, its role the one whose
    split it is (None: neither)."""
    roles = data.roles(info)
    if split == "validation" and split not in roles:
        raise UnknownSplitError(f"the run in {workdir} has no validation split (its "
                                "config.dataset.validation_split is unset); name a split of its dataset, "
                                "e.g. --split 'validation[:]' for the dataset's own split of that name")
    split = roles.get(split, split)
    return split, next((role for role, name in roles.items() if name == split), None)


def evaluate_checkpoint(workdir: str, split: str | None = None, step: int | None = None) -> dict:
    """{'workdir', 'dataset', 'split', 'role', 'step', 'eval/...': value} of the checkpoint at
    `step` (default: the newest) on `split` (default 'test', the run's eval split; see
    `resolve_split`). `role` is 'validation', 'test' or None. The test role's box scores are at
    the thresholds the validation split chooses, as in the trainer's final evaluation."""
    config = read_config(workdir)
    info = data.load_info(config.dataset)
    roles = data.roles(info)
    split, role = resolve_split(workdir, info, split or "test")
    check_split(config.dataset, split)
    trained = load_trained(workdir, step=step)
    mesh = evaluation.eval_mesh(trained.config)
    params, batch_stats = jax.device_put((trained.params, trained.batch_stats), sharding.replicated(mesh))
    eval_step = evaluation.eval_step_for(trained, mesh)

    def metrics_of(name: str, thresholds=None) -> dict[str, float]:
        batches = (
            sharding.global_batch(batch, mesh)
            for batch in data.eval_batches(trained.config.dataset, global_batch_size=trained.config.eval_batch_size,
                                           split=name, process_index=0, process_count=1)
        )
        return evaluation.eval_metrics(eval_step, params, batch_stats, batches, thresholds=thresholds)

    thresholds = None
    if role == "test" and "validation" in roles and scores_boxes(data.open_builder(config.dataset), config.dataset):
        # As the trainer scores the test split: box thresholds chosen on the validation split.
        thresholds = evaluation.chosen_thresholds(metrics_of(roles["validation"]))
    metrics = metrics_of(split, thresholds)
    return {"workdir": paths.resolve(workdir), "dataset": trained.info.name, "split": split, "role": role,
            "step": trained.step, **metrics}


def default_name(split: str, step: int) -> str:
    """`evaluate_<split>_step<N>.json`, the split's characters outside [A-Za-z0-9_.-] as '_'."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_") or "split"
    return f"evaluate_{safe}_step{step}.json"


def table(results: dict) -> str:
    """The results as aligned `name  value` lines under a heading."""
    metrics = {k: v for k, v in results.items() if k.startswith("eval/")}
    width = max(len(k) for k in metrics)
    role = f" ({results['role']})" if results.get("role") else ""
    lines = [f"{results['dataset']} {results['split']}{role}, step {results['step']}:"]
    lines += [f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items()]
    return "\n".join(lines)


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    cli.define_run_flags("JSON file (default WORKDIR/evaluate_<role or split>_step<N>.json).")
    flags.DEFINE_string("split", None, "validation (the run's validation split), test (its eval split, the "
                        "default) or any split expression of the run's dataset.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    try:
        use_run_devices(args.workdir)
        results = evaluate_checkpoint(args.workdir, args.split, args.step)
    except (FileNotFoundError, NoCheckpointError, UnknownSplitError, UnknownStepError,
            data.DatasetNotFoundError, data.DatasetFormatError) as error:
        raise SystemExit(f"error: {error}") from None
    out = output_path(args.out, args.workdir, default_name(results["role"] or results["split"], results["step"]))
    cli.write_report(out, results, table(results))


run = cli.program(main, define_flags)  # console script saol-evaluate

if __name__ == "__main__":
    run()
