"""Where a trained SAOL model's two outputs differ: errors, calibration and disagreements.

    python -m saol_jax.commands.compare_heads --workdir DIR [--out FILE.json]

A SAOL model has two classifiers: the SAOL output (`log_probs`, the
attention-weighted spatial class distributions) and the GAP-FC branch
(`gap_logits`), which self-distillation trains towards the SAOL output. To
see why one scores higher than the other, this compares them over the whole
eval split: top-1 and per-class error, expected calibration error (ECE, 15
equal-width confidence bins) and mean confidence, mean NLL, how often
their predictions differ and which one is right when they do, and per class
how many cells the attention spreads over (`att cells`, exp of its entropy),
since the SAOL output reads the image through the attention and GAP-FC
averages every cell. It prints a
table and writes the numbers as JSON (default `DIR/compare_heads.json`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saol_jax import data
from saol_jax.commands import cli
from saol_jax.core.restore import RestoredModel, class_names, load_trained, output_path, read_config, use_run_devices

HEADS = ("saol", "gap")
ECE_BINS = 15
REPORT_FILE = "compare_heads.json"  # written into the run's workdir unless --out says otherwise


class NoSaolHeadError(ValueError):
    """The run's model has only the GAP-FC head, so there is nothing to compare."""


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of probs [N, K] against labels [N]: sum over confidence bins of |accuracy - confidence|
    weighted by the bin's share of examples.

    Bins are `bins` equal-width intervals (lo, hi] of the top-class
    probability (confidence 0 falls in the first), as in Guo et al. 2017.
    """
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], confidence, side="left")
    gaps = np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidence, minlength=bins)
    return _ratio(np.abs(gaps).sum(), len(labels))


def per_class_error(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes] fraction of each class's examples (by true label) predicted wrongly; NaN for absent classes."""
    wrong = np.bincount(labels, weights=(pred != labels).astype(np.float64), minlength=num_classes)
    count = np.bincount(labels, minlength=num_classes)
    return np.where(count > 0, wrong / np.maximum(count, 1), np.nan)


def mean_nll(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean of -log p(label) over log_probs [N, K] and labels [N]."""
    return float(-np.take_along_axis(log_probs, labels[:, None], axis=-1).mean())


def disagreement(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray,
                 names: Sequence[str] = ("a", "b")) -> dict[str, float]:
    """How often two predictions [N] differ, and who is right when they do.

    Returns `rate` (share of examples where they differ), `count` (how
    many), and among those the shares `<name>_right` for each of `names`
    and `neither` (NaN when they never differ). Both cannot be right.
    """
    differ = pred_a != pred_b
    count = int(differ.sum())
    a_right = int((differ & (pred_a == labels)).sum())
    b_right = int((differ & (pred_b == labels)).sum())
    return {
        "rate": _ratio(count, len(labels)),
        "count": count,
        f"{names[0]}_right": _ratio(a_right, count),
        f"{names[1]}_right": _ratio(b_right, count),
        "neither": _ratio(count - a_right - b_right, count),
    }


def head_metrics(log_probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """Top-1 error, per-class error (keyed by `names`, one per class), ECE, mean confidence and
    mean NLL of one output's log_probs [N, K] on labels [N]."""
    probs = np.exp(log_probs)
    pred = log_probs.argmax(axis=-1)
    return {
        "top1_error": float(np.mean(pred != labels)),
        "per_class_error": dict(zip(names, per_class_error(pred, labels, len(names)).tolist())),
        "ece": expected_calibration_error(probs, labels),
        "mean_confidence": float(probs.max(axis=-1).mean()),
        "nll": mean_nll(log_probs, labels),
    }


def attention_cells(log_attention: jax.Array) -> jax.Array:
    """[N] effective number of cells each attention map [N, H, W] (log-probabilities) spreads over:
    exp of its entropy, 1 for all mass on one cell, H * W for a uniform map."""
    probs = jnp.exp(log_attention)
    entropy = -jnp.sum(probs * jnp.where(probs > 0, log_attention, 0.0), axis=(1, 2))
    return jnp.exp(entropy)


def attention_spread(cells: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """Mean effective attention cells over all examples and per true class (NaN for absent classes)."""
    total = np.bincount(labels, weights=cells, minlength=len(names))
    count = np.bincount(labels, minlength=len(names))
    per_class = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return {"mean": float(cells.mean()), "per_class": dict(zip(names, per_class.tolist()))}


def eval_outputs(trained: RestoredModel) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Over the whole eval split, padded rows dropped: log-probabilities [N, K] of each head in
    `HEADS`, the attention's effective cells [N] (`attention_cells`) and the labels [N]."""

    @jax.jit
    def heads(params, batch_stats, images: jax.Array) -> dict[str, jax.Array]:
        outputs = trained.apply(params, batch_stats, images)
        return {"saol": outputs["log_probs"], "gap": jax.nn.log_softmax(outputs["gap_logits"]),
                "cells": attention_cells(outputs["log_attention"])}

    collected: dict[str, list[np.ndarray]] = {key: [] for key in (*HEADS, "cells")}
    labels = []
    for batch in data.eval_batches(trained.config.dataset, global_batch_size=trained.config.eval_batch_size,
                                   process_index=0, process_count=1):
        keep = batch["mask"].astype(bool)
        outputs = jax.device_get(heads(trained.params, trained.batch_stats, jnp.asarray(batch["image"])))
        for key, parts in collected.items():
            parts.append(np.asarray(outputs[key], np.float64)[keep])
        labels.append(batch["label"][keep])
    cells = np.concatenate(collected.pop("cells"))
    return {head: np.concatenate(parts) for head, parts in collected.items()}, cells, np.concatenate(labels)


def compare(workdir: str) -> dict:
    """The comparison of the SAOL and GAP-FC outputs of the run in `workdir` on its eval split.

    Returns {'dataset', 'split', 'count', 'class_counts', 'saol': head_metrics, 'gap': head_metrics,
    'disagreement': disagreement with names 'saol' and 'gap'}; raises NoSaolHeadError for a
    GAP-FC-only model.
    """
    head = read_config(workdir).model.head
    if head != "saol":
        raise NoSaolHeadError(f"the model of {workdir} has no SAOL head (model.head == {head!r}): nothing to compare")
    trained = load_trained(workdir)
    names = class_names(trained)
    log_probs, cells, labels = eval_outputs(trained)
    preds = [log_probs[head].argmax(axis=-1) for head in HEADS]
    return {
        "dataset": trained.config.dataset.name,
        "split": trained.info.eval_split,
        "count": len(labels),
        "class_counts": dict(zip(names, np.bincount(labels, minlength=len(names)).tolist())),
        **{head: head_metrics(log_probs[head], labels, names) for head in HEADS},
        "disagreement": disagreement(*preds, labels, names=HEADS),
        "attention_cells": attention_spread(cells, labels, names),
    }


def table(report: Mapping) -> str:
    """The report as readable lines: per-class errors of both outputs side by side, then the summary."""
    saol, gap, dis = report["saol"], report["gap"], report["disagreement"]
    width = max(16, *(len(name) for name in report["class_counts"]))
    lines = [f"{report['dataset']} {report['split']}: {report['count']} examples",
             f"{'class':<{width}}  {'SAOL err':>8}  {'GAP err':>8}  {'count':>6}  {'att cells':>9}"]
    cells = report["attention_cells"]
    for name, count in report["class_counts"].items():
        lines.append(f"{name:<{width}}  {saol['per_class_error'][name]:8.4f}  "
                     f"{gap['per_class_error'][name]:8.4f}  {count:6d}  {cells['per_class'][name]:9.2f}")
    for key, label in (("top1_error", "top-1 error"), ("ece", f"ECE ({ECE_BINS} bins)"),
                       ("mean_confidence", "mean confidence"), ("nll", "mean NLL")):
        lines.append(f"{label:<{width}}  {saol[key]:8.4f}  {gap[key]:8.4f}")
    lines.append(f"disagree on {dis['rate']:.2%} ({dis['count']}): SAOL right {dis['saol_right']:.1%}, "
                 f"GAP-FC right {dis['gap_right']:.1%}, neither {dis['neither']:.1%}")
    return "\n".join(lines)


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    cli.define_run_flags("JSON file (default WORKDIR/compare_heads.json).", "A training run's workdir (a SAOL model).")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    use_run_devices(args.workdir)
    try:
        report = compare(args.workdir)
    except NoSaolHeadError as error:
        raise SystemExit(f"error: {error}") from None
    out = output_path(args.out, args.workdir, REPORT_FILE)
    cli.write_report(out, report, table(report))


run = cli.program(main, define_flags)  # console script saol-compare-heads

if __name__ == "__main__":
    run()
