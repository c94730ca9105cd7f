"""The ablation ladder over several seeds: GAP-FC, SAOL, SAOL + SS, SAOL + SS + SD, each SS-2 form.

    python -m saol_jax.ablate --config configs/cluttered_fashion_mnist.py --seeds 3 [--workdir DIR]
        [--rungs gap,saol,saol_ss@renorm,...] [--config.field=value ...]

A rung is a ladder head (`gap`, `gap_ms`, `saol`, `saol_ss`, `saol_ss_sd`), optionally
with an SS-2 form after `@` (`saol_ss@paste`; without one, the recipe's
`loss.ss2_form`). The default rungs are the whole study: GAP-FC + CutMix,
SAOL, and SAOL + SS and SAOL + SS + SD with each of the three SS-2 readings.
The controls of docs/method.md §8 (`gap_ms`, `saol_ss_sd@paste_mixed`) are
trained when named in `--rungs`.

Each (rung, seed) trains in `<workdir>/<rung>/seed<seed>` with the recipe's
config, the rung's head and loss weights (docs/method.md §8; they replace any
`loss.*` weight override) and seed `config.seed + i`. Re-running the same command
resumes unfinished runs and skips finished ones, so an interrupted study
goes on where it stopped. Writes `ablation.md` (mean ± std of the test
top-1 error, %, of the SAOL output and of the GAP-FC output, each rung's
difference from the GAP-FC baseline against two standard errors, for every
SAOL rung how many cells its attention spreads over, for rungs that train
both outputs how they differ (calibration, NLL, disagreements and per-class
error; these two from `saol_jax.compare_heads`, kept in each run's
`compare_heads.json`), and, on a dataset with boxes, the localisation of
each map), `ablation.png` and `ablation.json` to the workdir.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence

import matplotlib
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from saol_jax import compare_heads, paths, sharding  # noqa: E402
from saol_jax.config_check import parse_flags_or_exit  # noqa: E402
from saol_jax.ladder import HEAD_LADDER, MODEL_HEADS, apply_head, split_rung  # noqa: E402
from saol_jax.localization import MAPS  # noqa: E402
from saol_jax.losses import SS2_FORMS, SS2_READINGS  # noqa: E402
from saol_jax.trainer import USER_ERRORS, train_and_evaluate  # noqa: E402

log = logging.getLogger(__name__)

# Outputs reported per rung: the GAP-FC output only where it is trained as a classifier.
OUTPUTS = {"saol": "SAOL output", "gap": "GAP-FC output"}
REPORTED = {
    "gap": ("gap",),
    "gap_ms": ("gap",),
    "saol": ("saol",),
    "saol_ss": ("saol",),
    "saol_ss_sd": ("saol", "gap"),
}


STUDY_RUNGS = (
    "gap", "saol",
    *(f"saol_ss@{form}" for form in SS2_READINGS),
    *(f"saol_ss_sd@{form}" for form in SS2_READINGS),
)
# compare_heads scores of each output, and of their disagreements, in the two-outputs table.
TWO_OUTPUT_SCORES = {"ece": "ECE", "nll": "NLL"}
DISAGREEMENT_SCORES = {"rate": "disagree (%)", "saol_right": "SAOL right (%)", "gap_right": "GAP-FC right (%)"}
# Localisation scores in the table (saol_jax.localization), with their column titles.
LOC_SCORES = {"pointing": "pointing", "mass_ratio": "mass / area", "gt_known": "GT-known loc",
              "top1_loc": "top-1 loc", "iou": "mean IoU"}


def rung_config(base: ml_collections.ConfigDict, rung: str, seed: int) -> ml_collections.ConfigDict:
    """`base` with the rung's head, loss weights and SS-2 form, and the given seed."""
    head, form = split_rung(rung)
    config = ml_collections.ConfigDict(base.to_dict())
    apply_head(config, head)
    if form is not None:
        config.loss.ss2_form = form
    config.seed = seed
    return config


def run_one(config: ml_collections.ConfigDict, run_dir: str) -> dict[str, float]:
    """Trains (or resumes, or only reports when finished) one run; returns its final eval metrics."""
    return train_and_evaluate(config, run_dir)


def errors(results: dict[str, float], rung: str) -> dict[str, float]:
    """Top-1 error (%) of the outputs reported for `rung`."""
    return {out: 100.0 * (1.0 - results[f"eval/{out}_top1"]) for out in REPORTED[split_rung(rung)[0]]}


def has_attention(rung: str) -> bool:
    """Whether the rung's model has the SAOL head, and so an attention map."""
    return MODEL_HEADS[split_rung(rung)[0]] == "saol"


def localisation(results: dict[str, float], rung: str) -> dict[str, float]:
    """The true-box localisation scores of an eval, `<map>_<score>` (empty without boxes).

    The CAM is left out where the rung does not train the GAP-FC branch (it would be an untrained layer's).
    """
    kinds = [kind for kind in MAPS if kind != "cam" or "gap" in REPORTED[split_rung(rung)[0]]]
    return {f"{kind}_{score}": results[f"eval/loc_{kind}_{score}"]
            for kind in kinds for score in LOC_SCORES if f"eval/loc_{kind}_{score}" in results}


def head_report(run_dir: str) -> dict:
    """`compare_heads.compare` of a finished SAOL run, computed once and kept in the run."""
    path = paths.join(run_dir, compare_heads.REPORT_FILE)
    if not paths.exists(path):
        paths.write_json(path, compare_heads.compare(run_dir))
    return paths.read_json(path)


def summarise_two_outputs(reports: Sequence[dict]) -> dict:
    """Mean ± std over seeds of each output's calibration and NLL, the disagreements (%), and the
    top-1 error of the SAOL output minus the GAP-FC output (points), over all classes and per class,
    and the attention's effective cells, likewise."""
    summary = {f"{head}_{score}": summarise([r[head][score] for r in reports])
               for score in TWO_OUTPUT_SCORES for head in compare_heads.HEADS}
    for key in DISAGREEMENT_SCORES:
        summary[key] = summarise([100.0 * r["disagreement"][key] for r in reports])
    summary["error_diff"] = {
        "all": summarise([100.0 * (r["saol"]["top1_error"] - r["gap"]["top1_error"]) for r in reports]),
        **{name: summarise([100.0 * (r["saol"]["per_class_error"][name] - r["gap"]["per_class_error"][name])
                            for r in reports])
           for name in reports[0]["class_counts"]},
    }
    summary["attention_cells"] = {
        "all": summarise([r["attention_cells"]["mean"] for r in reports]),
        **{name: summarise([r["attention_cells"]["per_class"][name] for r in reports])
           for name in reports[0]["class_counts"]},
    }
    return summary


def summarise(values: Sequence[float]) -> dict[str, float]:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(np.mean(values)), "std": std}


def check_rungs(rungs: Sequence[str]) -> None:
    unknown = [r for r in rungs if split_rung(r)[0] not in HEAD_LADDER or split_rung(r)[1] not in (None, *SS2_FORMS)]
    if unknown:
        raise ValueError(f"unknown rungs {unknown}; valid: {', '.join(HEAD_LADDER)}, "
                         f"each optionally @{'|'.join(SS2_FORMS)}")


def versus_baseline(entry: dict, baseline: dict) -> dict[str, dict[str, float | bool]]:
    """Each output's mean error minus the GAP-FC baseline's, its standard error and |diff| > 2 SE."""
    base = baseline["top1_error"]["gap"]
    base_n = len(baseline["runs"])
    out = {}
    for output, stats in entry["top1_error"].items():
        se = math.sqrt(stats["std"] ** 2 / len(entry["runs"]) + base["std"] ** 2 / base_n)
        diff = stats["mean"] - base["mean"]
        out[output] = {"diff": diff, "se": se, "beyond_2se": bool(abs(diff) > 2 * se)}
    return out


def run_ladder(
    base: ml_collections.ConfigDict, workdir: str, *, seeds: int, rungs: Sequence[str] = STUDY_RUNGS
) -> dict:
    """Trains every (rung, seed), then writes the table, plot and JSON; returns the JSON payload."""
    check_rungs(rungs)
    workdir = paths.resolve(workdir)
    seed_values = [base.seed + i for i in range(seeds)]
    per_rung = {}
    for rung in rungs:
        runs = []
        for seed in seed_values:
            run_dir = paths.join(workdir, rung, f"seed{seed}")
            log.info("ablation: %s, seed %d in %s", rung, seed, run_dir)
            results = run_one(rung_config(base, rung, seed), run_dir)
            runs.append({"seed": seed, "workdir": run_dir, "top1_error": errors(results, rung),
                         "localisation": localisation(results, rung)})
            if has_attention(rung):
                report = head_report(run_dir)
                runs[-1]["attention_cells"] = report["attention_cells"]["mean"]
                if len(REPORTED[split_rung(rung)[0]]) == 2:
                    runs[-1]["two_outputs"] = report
        per_rung[rung] = {
            "runs": runs,
            "top1_error": {out: summarise([r["top1_error"][out] for r in runs])
                           for out in REPORTED[split_rung(rung)[0]]},
            "localisation": {name: summarise([r["localisation"][name] for r in runs])
                             for name in runs[0]["localisation"]},
        }
        if "attention_cells" in runs[0]:
            per_rung[rung]["attention_cells"] = summarise([r["attention_cells"] for r in runs])
        if "two_outputs" in runs[0]:
            per_rung[rung]["two_outputs"] = summarise_two_outputs([r["two_outputs"] for r in runs])
    if "gap" in per_rung and len(seed_values) > 1:
        for rung, entry in per_rung.items():
            if rung != "gap":
                entry["vs_gap"] = versus_baseline(entry, per_rung["gap"])
    payload = {
        "dataset": base.dataset.name,
        "backbone": base.model.backbone,
        "seeds": seed_values,
        "rungs": per_rung,
    }
    paths.write_json(paths.join(workdir, "ablation.json"), payload)
    paths.write_text(paths.join(workdir, "ablation.md"), markdown(payload) + "\n")
    plot(payload, paths.join(workdir, "ablation.png"))
    return payload


def _cell(stats: dict[str, float] | None, digits: int = 2) -> str:
    if stats is None:
        return "n/a"
    if math.isnan(stats["std"]):
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(payload: dict) -> str:
    """The results table: one row per rung, mean ± std over seeds."""
    seeds = payload["seeds"]
    lines = [
        f"Test top-1 error (%), {payload['dataset']}, {payload['backbone']}, "
        f"mean ± std over {len(seeds)} seed(s) {seeds}.",
        "",
        "| rung | " + " | ".join(OUTPUTS.values()) + " |",
        "|---|" + "---|" * len(OUTPUTS),
    ]
    for rung, entry in payload["rungs"].items():
        cells = [_cell(entry["top1_error"].get(out)) for out in OUTPUTS]
        lines.append(f"| {rung} | " + " | ".join(cells) + " |")
    compared = {rung: entry["vs_gap"] for rung, entry in payload["rungs"].items() if "vs_gap" in entry}
    if compared:
        lines += ["", "Difference of mean top-1 error from GAP-FC + CutMix (points; SE from the seeds' spread; "
                      "* = beyond two standard errors):", "",
                  "| rung | " + " | ".join(OUTPUTS.values()) + " |", "|---|" + "---|" * len(OUTPUTS)]
        for rung, vs in compared.items():
            cells = [f"{vs[out]['diff']:+.2f} ± {vs[out]['se']:.2f}{' *' if vs[out]['beyond_2se'] else ''}"
                     if out in vs else "n/a" for out in OUTPUTS]
            lines.append(f"| {rung} | " + " | ".join(cells) + " |")
    spread = {rung: entry["attention_cells"] for rung, entry in payload["rungs"].items()
              if "attention_cells" in entry}
    if spread:
        lines += ["", "Cells the attention spreads over on the eval split (exp of its entropy, mean over images; "
                      "mean ± std over seeds):", "", "| rung | att cells |", "|---|---|"]
        lines += [f"| {rung} | {_cell(cells, digits=1)} |" for rung, cells in spread.items()]
    lines += _two_outputs_lines(payload)
    located = {rung: entry["localisation"] for rung, entry in payload["rungs"].items() if entry["localisation"]}
    if located:
        lines += ["", "Localisation against the true boxes (saol_jax.localization), mean ± std over seeds:", "",
                  "| rung | map | " + " | ".join(LOC_SCORES.values()) + " |",
                  "|---|---|" + "---|" * len(LOC_SCORES)]
        for rung, scores in located.items():
            for kind in MAPS:
                if f"{kind}_pointing" in scores:
                    cells = [_cell(scores.get(f"{kind}_{score}")) for score in LOC_SCORES]
                    lines.append(f"| {rung} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _two_outputs_lines(payload: dict) -> list[str]:
    """The two-outputs tables: calibration and disagreements per rung, then per-class differences."""
    both = {rung: entry["two_outputs"] for rung, entry in payload["rungs"].items() if "two_outputs" in entry}
    if not both:
        return []
    score_titles = [f"{title} {OUTPUTS[head].split()[0]}" for title in TWO_OUTPUT_SCORES.values()
                    for head in compare_heads.HEADS]
    lines = ["", "The two outputs of the rungs that train both (saol_jax.compare_heads on the eval split), "
                 "mean ± std over seeds; the right shares are of the images where they disagree:", "",
             "| rung | " + " | ".join(score_titles + list(DISAGREEMENT_SCORES.values())) + " |",
             "|---|" + "---|" * (len(score_titles) + len(DISAGREEMENT_SCORES))]
    for rung, summary in both.items():
        cells = [_cell(summary[f"{head}_{score}"], digits=4) for score in TWO_OUTPUT_SCORES
                 for head in compare_heads.HEADS]
        cells += [_cell(summary[key]) for key in DISAGREEMENT_SCORES]
        lines.append(f"| {rung} | " + " | ".join(cells) + " |")
    n = len(payload["seeds"])
    lines += ["", "Top-1 error of the SAOL output minus the GAP-FC output of the same runs, over all classes "
                  "and per class (points, mean ± std over seeds; * = beyond two standard errors of the paired "
                  "difference), and the cells the attention spreads over (exp of its entropy):", "",
              "| class | " + " | ".join(f"{rung} | att cells" for rung in both) + " |",
              "|---|" + "---|---|" * len(both)]
    for name in next(iter(both.values()))["error_diff"]:
        cells = []
        for summary in both.values():
            cells.append(_paired_cell(summary["error_diff"][name], n))
            cells.append(_cell(summary["attention_cells"][name], digits=1))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _paired_cell(stats: dict[str, float], n: int) -> str:
    """A paired difference over n seeds: mean ± std, starred beyond two standard errors."""
    if math.isnan(stats["std"]):
        return f"{stats['mean']:+.2f}"
    beyond = abs(stats["mean"]) > 2 * stats["std"] / math.sqrt(n)
    return f"{stats['mean']:+.2f} ± {stats['std']:.2f}{' *' if beyond else ''}"


def _offset(out: str, reported: dict, width: float) -> float:
    """Bar position relative to the rung's tick: side by side when both outputs are reported."""
    if len(reported) == 1:
        return 0.0
    return (list(OUTPUTS).index(out) - 0.5) * width


def plot(payload: dict, path: str) -> str:
    """Grouped bars (mean, std error bars, each seed a dot) per rung and output."""
    rungs = list(payload["rungs"])
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.8 * len(rungs) + 2, 4))
    for k, (out, label) in enumerate(OUTPUTS.items()):
        xs = [i + _offset(out, payload["rungs"][r]["top1_error"], width)
              for i, r in enumerate(rungs) if out in payload["rungs"][r]["top1_error"]]
        entries = [payload["rungs"][r] for r in rungs if out in payload["rungs"][r]["top1_error"]]
        if not entries:
            continue
        means = [e["top1_error"][out]["mean"] for e in entries]
        stds = [np.nan_to_num(e["top1_error"][out]["std"]) for e in entries]
        ax.bar(xs, means, width, yerr=stds, capsize=4, label=label, color=f"C{k}", alpha=0.8)
        for x, e in zip(xs, entries):
            values = [r["top1_error"][out] for r in e["runs"]]
            ax.plot([x] * len(values), values, "k.", markersize=5)
    ax.set_xticks(range(len(rungs)))
    ax.set_xticklabels(rungs)
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title(f"{payload['dataset']}, {payload['backbone']}, {len(payload['seeds'])} seed(s)")
    ax.legend()
    fig.tight_layout()
    paths.save_figure(fig, path)
    plt.close(fig)
    return path


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/fashion_mnist.py[:options].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", "workdirs/ablation", "Folder of the runs and the results.")
    flags.DEFINE_integer("seeds", 3, "Seeds per rung: config.seed, config.seed + 1, ...")
    flags.DEFINE_list("rungs", list(STUDY_RUNGS), "Rungs to run: a ladder head, optionally @<SS-2 form>.")
    flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("saol_jax").setLevel(logging.INFO)
    try:
        check_rungs(flags.FLAGS.rungs)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    config = flags.FLAGS.config
    sharding.configure_cpu_devices(config.num_cpu_devices)
    try:
        payload = run_ladder(config, flags.FLAGS.workdir, seeds=flags.FLAGS.seeds, rungs=flags.FLAGS.rungs)
    except USER_ERRORS as error:
        sys.exit(f"error: {error}")
    print(markdown(payload))
    print(f"wrote ablation.md, ablation.png and ablation.json in {flags.FLAGS.workdir}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)
