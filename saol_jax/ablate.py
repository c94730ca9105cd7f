"""The ablation ladder over several seeds: GAP-FC, SAOL, SAOL + SS, SAOL + SS + SD.

    python -m saol_jax.ablate --config configs/fashion_mnist.py --seeds 3 [--workdir DIR]
        [--rungs gap,saol,saol_ss,saol_ss_sd] [--config.field=value ...]

Each (rung, seed) trains in `<workdir>/<rung>/seed<seed>` with the recipe's
config, the rung's head and loss weights (docs/method.md §8; they replace
any `loss.*` override) and seed `config.seed + i`. Re-running resumes unfinished runs and
skips finished ones. Writes `ablation.md` (mean ± std of the test top-1
error, %, of the SAOL output and of the GAP-FC output), `ablation.png` and
`ablation.json` to the workdir.
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

from saol_jax import paths, sharding  # noqa: E402
from saol_jax.config_check import parse_flags_or_exit  # noqa: E402
from saol_jax.ladder import HEAD_LADDER, apply_head  # noqa: E402
from saol_jax.trainer import USER_ERRORS, train_and_evaluate  # noqa: E402

log = logging.getLogger(__name__)

# Outputs reported per rung: the GAP-FC output only where it is trained as a classifier.
OUTPUTS = {"saol": "SAOL output", "gap": "GAP-FC output"}
REPORTED = {
    "gap": ("gap",),
    "saol": ("saol",),
    "saol_ss": ("saol",),
    "saol_ss_sd": ("saol", "gap"),
}


def rung_config(base: ml_collections.ConfigDict, rung: str, seed: int) -> ml_collections.ConfigDict:
    """`base` with the rung's head and loss weights and the given seed."""
    config = ml_collections.ConfigDict(base.to_dict())
    apply_head(config, rung)
    config.seed = seed
    return config


def run_one(config: ml_collections.ConfigDict, run_dir: str) -> dict[str, float]:
    """Trains (or resumes, or only reports when finished) one run; returns its final eval metrics."""
    return train_and_evaluate(config, run_dir)


def errors(results: dict[str, float], rung: str) -> dict[str, float]:
    """Top-1 error (%) of the outputs reported for `rung`."""
    return {out: 100.0 * (1.0 - results[f"eval/{out}_top1"]) for out in REPORTED[rung]}


def summarise(values: Sequence[float]) -> dict[str, float]:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(np.mean(values)), "std": std}


def check_rungs(rungs: Sequence[str]) -> None:
    unknown = [r for r in rungs if r not in HEAD_LADDER]
    if unknown:
        raise ValueError(f"unknown rungs {unknown}; valid: {', '.join(HEAD_LADDER)}")


def run_ladder(
    base: ml_collections.ConfigDict, workdir: str, *, seeds: int, rungs: Sequence[str] = tuple(HEAD_LADDER)
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
            runs.append({"seed": seed, "workdir": run_dir,
                         "top1_error": errors(run_one(rung_config(base, rung, seed), run_dir), rung)})
        per_rung[rung] = {
            "runs": runs,
            "top1_error": {out: summarise([r["top1_error"][out] for r in runs]) for out in REPORTED[rung]},
        }
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


def _cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"
    if math.isnan(stats["std"]):
        return f"{stats['mean']:.2f}"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


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
    return "\n".join(lines)


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
    flags.DEFINE_list("rungs", list(HEAD_LADDER), "Rungs of the ladder to run.")
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
