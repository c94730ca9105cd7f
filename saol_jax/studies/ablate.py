"""The ablation ladder over several seeds: GAP-FC, SAOL, SAOL + SS, SAOL + SS + SD, each SS-2 form.

    python -m saol_jax.studies.ablate --config configs/cluttered_fashion_mnist.py --seeds 5 [--workdir DIR]
        [--results DIR] [--rungs gap,saol,saol_ss@renorm,...] [--parallel N] [--config.field=value ...]

A rung is a ladder head (`gap`, `gap_ms`, `saol`, `saol_ss`, `saol_ss_sd`), optionally
with an SS-2 form after `@` (`saol_ss@paste`; without one, the recipe's
`loss.ss2_form`), or with a cheaper `paste` target (`saol_ss_sd@paste_self`,
`saol_jax.core.ladder.PASTE_VARIANTS`). The default rungs are the whole study: GAP-FC + CutMix,
SAOL, and SAOL + SS and SAOL + SS + SD with each of the three SS-2 readings.
The controls of docs/method.md §8 (`gap_ms`, `saol_ss_sd@paste_mixed`) are
trained when named in `--rungs`.

Each (rung, seed) trains in `<workdir>/<rung>/seed<seed>` with the recipe's
config, the rung's head and loss weights (docs/method.md §8; they replace any
`loss.*` weight override) and seed `config.seed + i`. Re-running the same command
resumes unfinished runs and skips finished ones, so an interrupted study
goes on where it stopped. `--parallel N` trains up to N runs at once as
separate processes sharing the device(s) (saol_jax.studies.parallel_runs: each run's
output in `<rung>/seed<seed>.log`, a line as each starts and ends; a failed
run is reported with its last line, the others go on, and the study is
written once a re-run finds them all finished). On a GPU each process gets
0.9/N of the device's memory (`XLA_PYTHON_CLIENT_MEM_FRACTION`, unless set),
so that N fit on one device. Writes `ablation.md` (mean ± std of the top-1
error, %, of the SAOL output and of the GAP-FC output, on the test split and,
where the runs log one, the validation split; each rung's difference from the
GAP-FC baseline with Welch's t-test across seeds; the rung chosen on the
validation split; for every SAOL rung how many cells its attention spreads
over; for rungs that train both outputs how they differ (calibration, NLL,
disagreements, and the paired t-test of their errors over all classes and per
class; these from `saol_jax.commands.compare_heads`, kept in each run's
`compare_heads.json`); and, on a dataset with boxes, the localisation of each
map and its difference from the baseline's CAM), `ablation.png` and
`ablation.json` to the workdir. A difference is called significant only at
p < 0.05 after Holm's correction across the rows of its table (saol_jax.studies.stats);
comparisons with fewer than 5 seeds a side are flagged.

Each finished run's result file (recipe, config, rung, seed, step, every final
metric) and the study's statistics go to `--results` (default
`results/<recipe>-<workdir name>`; format in results/README.md), from which
`python -m saol_jax.studies.report` renders the tables.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Sequence

import matplotlib
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from saol_jax.commands import cli, compare_heads  # noqa: E402
from saol_jax.core import paths, sharding  # noqa: E402
from saol_jax.core.ladder import HEAD_LADDER, MODEL_HEADS, PASTE_VARIANTS, apply_head, rung_loss, split_rung  # noqa: E402
from saol_jax.core.localisation import MAPS  # noqa: E402
from saol_jax.core.losses import SS2_FORMS, SS2_READINGS  # noqa: E402
from saol_jax.core.metrics import read_events  # noqa: E402
from saol_jax.core.trainer import USER_ERRORS, train_and_evaluate  # noqa: E402
from saol_jax.studies import parallel_runs  # noqa: E402
from saol_jax.studies import results as results_files  # noqa: E402
from saol_jax.studies import stats  # noqa: E402

log = logging.getLogger(__name__)

# The control SAOL's rungs are also compared with (docs/method.md §8): GAP-FC on the fused decoder features.
CONTROL = "gap_ms"
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
# Column titles, and order, of the known localisation scores (saol_jax.core.localisation); the tables show
# every score the runs have, others under their metric name after these.
LOC_SCORES = {"maxboxacc_v2": "MaxBoxAccV2", "maxboxacc_50": "GT-known loc (MaxBoxAcc@0.5)",
              "top1_loc": "top-1 loc", "pointing": "pointing", "mass_ratio": "mass / area", "iou": "mean IoU"}


def rung_config(base: ml_collections.ConfigDict, rung: str, seed: int) -> ml_collections.ConfigDict:
    """`base` with the rung's head, loss weights and SS-2 form, and the given seed."""
    head, form = split_rung(rung)
    config = ml_collections.ConfigDict(base.to_dict())
    apply_head(config, head)
    if form is not None:
        config.loss.update(rung_loss(form))
    config.seed = seed
    return config


def run_one(config: ml_collections.ConfigDict, run_dir: str) -> dict[str, float]:
    """Trains (or resumes, or only reports when finished) one run; returns its final eval metrics."""
    return train_and_evaluate(config, run_dir)


def final_metrics(run_dir: str, results: dict[str, float]) -> tuple[int | None, dict[str, float]]:
    """The run's last logged step and its final metrics: `results` and whatever else (validation) the
    run logged at that step."""
    events = read_events(run_dir)
    if not events:
        return None, dict(results)
    step = max(e.get("step", 0) for e in events)
    prefixes = tuple(results_files.SPLITS.values())
    logged = {k: v for e in events if e.get("step") == step for k, v in e.items() if k.startswith(prefixes)}
    return step, {**logged, **results}


def run_record(rung: str, seed: int, run_dir: str, config: ml_collections.ConfigDict,
               metrics: dict[str, float], step: int | None, report: dict | None, recipe: dict,
               software: dict) -> dict:
    """What one run leaves in its result file (results/README.md); `software` trained it."""
    record = {"rung": rung, "seed": seed, "step": step, "workdir": run_dir, "recipe": recipe,
              "config": json.loads(config.to_json_best_effort()), "metrics": results_files.split_metrics(metrics),
              "software": software}
    if report is not None:
        record["compare_heads"] = report
    return record


def _number(value: float | None) -> float:
    """A metric read back from a result file, where null stands for a non-finite value."""
    return math.nan if value is None else float(value)


def errors(metrics: dict[str, float | None], rung: str) -> dict[str, float]:
    """Top-1 error (%) of the outputs reported for `rung`, from one split's metrics (`<output>_top1`)."""
    return {out: 100.0 * (1.0 - _number(metrics[f"{out}_top1"])) for out in REPORTED[split_rung(rung)[0]]}


def has_attention(rung: str) -> bool:
    """Whether the rung's model has the SAOL head, and so an attention map."""
    return MODEL_HEADS[split_rung(rung)[0]] == "saol"


def localisation(metrics: dict[str, float | None], rung: str) -> dict[str, float]:
    """The true-box localisation scores of one split's metrics (`loc_<map>_<score>`), as `<map>_<score>`;
    every score the run has (empty without boxes). The operating thresholds
    (`loc_<map>_threshold_<level>`) are settings, not scores, and are left out.

    The CAM is left out where the rung does not train the GAP-FC branch (it would be an untrained layer's).
    """
    kinds = [kind for kind in MAPS if kind != "cam" or "gap" in REPORTED[split_rung(rung)[0]]]
    return {key[len("loc_"):]: _number(value) for key, value in sorted(metrics.items())
            if any(key.startswith(f"loc_{kind}_") for kind in kinds) and "_threshold_" not in key}


def head_report(run_dir: str) -> dict:
    """`compare_heads.compare` of a finished SAOL run, computed once and kept in the run."""
    path = paths.join(run_dir, compare_heads.REPORT_FILE)
    if not paths.exists(path):
        paths.write_json(path, compare_heads.compare(run_dir))
    return paths.read_json(path)


def tested(samples: dict[str, tuple[Sequence[float], Sequence[float]]],
           test: Callable[..., stats.TTest] = stats.welch) -> dict[str, dict]:
    """`test` on each (a, b) of one family, with Holm's adjusted p and whether it is below ALPHA."""
    results = {key: test(a, b) for key, (a, b) in samples.items()}
    adjusted = stats.holm([r.p for r in results.values()])
    return {key: {**dataclasses.asdict(r), "p_holm": float(q), "significant": stats.significant(q)}
            for (key, r), q in zip(results.items(), adjusted)}


def summarise_two_outputs(reports: Sequence[dict]) -> dict:
    """Mean ± std over seeds of each output's calibration and NLL, the disagreements (%), and the
    top-1 error of the SAOL output minus the GAP-FC output (points), over all classes and per class,
    with its paired t-test (Holm's correction across the classes), and the attention's effective
    cells, likewise."""
    summary = {f"{head}_{score}": over_seeds([r[head][score] for r in reports])
               for score in TWO_OUTPUT_SCORES for head in compare_heads.HEADS}
    for key in DISAGREEMENT_SCORES:
        summary[key] = over_seeds([100.0 * r["disagreement"][key] for r in reports])
    names = list(reports[0]["class_counts"])
    pairs = {"all": ([100.0 * r["saol"]["top1_error"] for r in reports],
                     [100.0 * r["gap"]["top1_error"] for r in reports]),
             **{name: ([100.0 * r["saol"]["per_class_error"][name] for r in reports],
                       [100.0 * r["gap"]["per_class_error"][name] for r in reports]) for name in names}}
    summary["error_test"] = {**tested({"all": pairs["all"]}, stats.paired),
                             **tested({name: pairs[name] for name in names}, stats.paired)}
    summary["attention_cells"] = {
        "all": over_seeds([r["attention_cells"]["mean"] for r in reports]),
        **{name: over_seeds([r["attention_cells"]["per_class"][name] for r in reports]) for name in names},
    }
    return summary


def over_seeds(values: Sequence[float]) -> dict[str, float]:
    mean, std = stats.mean_std(values)
    return {"mean": mean, "std": std}


def check_rungs(rungs: Sequence[str]) -> None:
    forms = (None, *SS2_FORMS, *PASTE_VARIANTS)
    unknown = [r for r in rungs if split_rung(r)[0] not in HEAD_LADDER or split_rung(r)[1] not in forms]
    if unknown:
        raise ValueError(f"unknown rungs {unknown}; valid: {', '.join(HEAD_LADDER)}, "
                         f"each optionally @{'|'.join(forms[1:])}")


def _errors_versus(per_rung: dict[str, dict], base_rung: str, rungs: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Welch's test of each of `rungs`' test top-1 error (per output) against `base_rung`'s GAP-FC output,
    across seeds; one Holm family of all (rung, output) rows. {rung: {output: test}}."""
    base = [run["top1_error"]["gap"] for run in per_rung[base_rung]["runs"]]
    return _nest(tested({(rung, out): ([run["top1_error"][out] for run in per_rung[rung]["runs"]], base)
                         for rung in rungs for out in per_rung[rung]["top1_error"]}))


def versus_baseline(per_rung: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Every rung's test top-1 error against the GAP-FC baseline's (`_errors_versus`)."""
    return _errors_versus(per_rung, "gap", [rung for rung in per_rung if rung != "gap"])


def versus_control(per_rung: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Each SAOL rung's test top-1 error against the multi-scale control CONTROL's (GAP-FC on SAOL's
    fused decoder features; `_errors_versus`): whether the gain over GAP-FC is more than the decoder's
    extra stages give."""
    return _errors_versus(per_rung, CONTROL, [rung for rung in per_rung if has_attention(rung)])


def localisation_versus_baseline(per_rung: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Welch's test of each rung's test localisation scores (per map) against the GAP-FC baseline's CAM,
    across seeds; one Holm family per score. {rung: {'<map>_<score>': test}}."""
    base_runs = per_rung["gap"]["runs"]
    scores = [name[len("cam_"):] for name in per_rung["gap"]["localisation"] if name.startswith("cam_")]
    rows = {}
    for score in scores:
        base = [run["localisation"][f"cam_{score}"] for run in base_runs]
        rows.update(tested({(rung, name): ([run["localisation"][name] for run in entry["runs"]], base)
                            for rung, entry in per_rung.items() if rung != "gap"
                            for name in entry["localisation"] if _score_of(name) == score}))
    return _nest(rows)


def _score_of(name: str) -> str:
    """'attention_maxboxacc_50' -> 'maxboxacc_50': the score of a `<map>_<score>` name."""
    kind = next(kind for kind in MAPS if name.startswith(f"{kind}_"))
    return name[len(kind) + 1:]


def _nest(rows: dict[tuple[str, str], dict]) -> dict[str, dict[str, dict]]:
    nested: dict[str, dict[str, dict]] = {}
    for (outer, inner), row in rows.items():
        nested.setdefault(outer, {})[inner] = row
    return nested


def choose(per_rung: dict[str, dict]) -> dict | None:
    """The rung with the lowest mean SAOL-output top-1 error on the validation split, with its test
    error; None where the runs have no validation metrics (a choice is never made on the test split)."""
    candidates = {rung: entry for rung, entry in per_rung.items() if "saol" in entry.get("val_top1_error", {})}
    if not candidates:
        return None
    rung = min(candidates, key=lambda r: candidates[r]["val_top1_error"]["saol"]["mean"])
    return {"rung": rung, "output": "saol", "val_top1_error": candidates[rung]["val_top1_error"]["saol"],
            "test_top1_error": candidates[rung]["top1_error"]["saol"]}


def run_entry(record: dict) -> dict:
    """One run of the study, from its result-file record: its errors and localisation per split, and
    its compare_heads report where it has a SAOL head."""
    rung, metrics = record["rung"], record["metrics"]
    entry = {"seed": record["seed"], "workdir": record.get("workdir"), "step": record.get("step"),
             "top1_error": errors(metrics["test"], rung), "localisation": localisation(metrics["test"], rung)}
    reported = REPORTED[split_rung(rung)[0]]
    if all(f"{out}_top1" in metrics.get("val", {}) for out in reported):
        entry["val_top1_error"] = errors(metrics["val"], rung)
        entry["val_localisation"] = localisation(metrics["val"], rung)
    report = record.get("compare_heads")
    if report is not None:
        entry["attention_cells"] = report["attention_cells"]["mean"]
        if len(reported) == 2:
            entry["two_outputs"] = report
    return entry


def _rung_order(rung: str) -> tuple[int, str]:
    return (STUDY_RUNGS.index(rung) if rung in STUDY_RUNGS else len(STUDY_RUNGS), rung)


def study_payload(records: Sequence[dict]) -> dict:
    """The study's summaries (mean ± std over seeds) and tests, from its runs' result-file records."""
    rungs = sorted({r["rung"] for r in records}, key=_rung_order)
    per_rung = {}
    for rung in rungs:
        runs = [run_entry(r) for r in sorted(records, key=lambda r: r["seed"]) if r["rung"] == rung]
        entry = {
            "runs": runs,
            "top1_error": {out: over_seeds([r["top1_error"][out] for r in runs]) for out in runs[0]["top1_error"]},
            "localisation": {name: over_seeds([r["localisation"][name] for r in runs])
                             for name in runs[0]["localisation"]},
        }
        if all("val_top1_error" in r for r in runs):
            entry["val_top1_error"] = {out: over_seeds([r["val_top1_error"][out] for r in runs])
                                       for out in runs[0]["val_top1_error"]}
            entry["val_localisation"] = {name: over_seeds([r["val_localisation"][name] for r in runs])
                                         for name in runs[0]["val_localisation"]}
        if "attention_cells" in runs[0]:
            entry["attention_cells"] = over_seeds([r["attention_cells"] for r in runs])
        if "two_outputs" in runs[0]:
            entry["two_outputs"] = summarise_two_outputs([r["two_outputs"] for r in runs])
        per_rung[rung] = entry
    if "gap" in per_rung:
        for rung, rows in versus_baseline(per_rung).items():
            per_rung[rung]["vs_gap"] = rows
        for rung, rows in localisation_versus_baseline(per_rung).items():
            per_rung[rung]["loc_vs_gap"] = rows
    if CONTROL in per_rung:
        for rung, rows in versus_control(per_rung).items():
            per_rung[rung]["vs_control"] = rows
    config = records[0]["config"]
    payload = {
        "dataset": config["dataset"]["name"],
        "backbone": config["model"]["backbone"],
        "seeds": sorted({r["seed"] for r in records}),
        "rungs": per_rung,
    }
    chosen = choose(per_rung)
    if chosen is not None:
        payload["chosen"] = chosen
    return payload


def run_ladder(
    base: ml_collections.ConfigDict, workdir: str, *, seeds: int, rungs: Sequence[str] = STUDY_RUNGS,
    results_dir: str | None = None, recipe: dict | None = None, parallel: int = 1,
) -> dict:
    """Trains every (rung, seed), then writes the table, plot and JSON; returns the JSON payload.

    With `parallel` > 1 the runs are first trained in up to that many processes at once
    (saol_jax.studies.parallel_runs; RunsFailedError after all ended if any failed), then read back here.
    With `results_dir`, also writes each run's result file and the study's statistics there
    (saol_jax.studies.results); `recipe` (the recipe file and its command-line overrides) goes in each.
    """
    check_rungs(rungs)
    workdir = paths.resolve(workdir)
    seed_values = [base.seed + i for i in range(seeds)]

    def software(rung: str, seed: int) -> dict:
        earlier = None if results_dir is None else results_files.run_path(results_dir, rung, seed)
        return results_files.training_software(paths.join(workdir, rung, f"seed{seed}"), earlier)

    if parallel > 1:
        for rung in rungs:
            for seed in seed_values:
                software(rung, seed)
        # Seed by seed: the first runs compile each rung once for the others' cache, and a study
        # stopped early has its seeds balanced across rungs.
        parallel_runs.train_all([
            parallel_runs.Job(f"{rung} seed {seed}", rung_config(base, rung, seed),
                              paths.join(workdir, rung, f"seed{seed}"))
            for seed in seed_values for rung in rungs
        ], parallel)
    records = []
    for rung in rungs:
        for seed in seed_values:
            run_dir = paths.join(workdir, rung, f"seed{seed}")
            log.info("ablation: %s, seed %d in %s", rung, seed, run_dir)
            config = rung_config(base, rung, seed)
            trained_by = software(rung, seed)
            step, metrics = final_metrics(run_dir, run_one(config, run_dir))
            report = head_report(run_dir) if has_attention(rung) else None
            records.append(run_record(rung, seed, run_dir, config, metrics, step, report, recipe or {}, trained_by))
            if results_dir is not None:
                results_files.write_run(results_dir, records[-1])
    payload = study_payload(records)
    for line in seed_warnings(payload):
        log.warning("%s", line)
    paths.write_json(paths.join(workdir, "ablation.json"), payload)
    paths.write_text(paths.join(workdir, "ablation.md"), markdown(payload) + "\n")
    plot(payload, paths.join(workdir, "ablation.png"))
    if results_dir is not None:
        paths.write_text(paths.join(results_dir, results_files.STUDY_FILE),
                         results_files.dumps({"recipe": recipe or {}, "workdir": workdir, **payload}))
    return payload


def cell(summary: dict[str, float] | None, digits: int = 2) -> str:
    """'mean ± std' of a summary over seeds ('mean' alone for one seed, 'n/a' for none)."""
    if summary is None:
        return "n/a"
    if math.isnan(summary["std"]):
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def p_text(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


TEST_COLUMNS = ("difference ± SE", "t", "df", "p", "Holm p", "significant")


def test_cells(row: dict, digits: int = 2) -> list[str]:
    """A test's cells under TEST_COLUMNS."""
    se = "" if math.isnan(row["se"]) else f" ± {row['se']:.{digits}f}"
    t = "n/a" if math.isnan(row["t"]) else f"{row['t']:.2f}"
    df = "n/a" if math.isnan(row["df"]) else f"{row['df']:.1f}"
    verdict = "yes" if row["significant"] else "no"
    if row["reason"]:
        verdict += f" ({row['reason']})"
    return [f"{row['difference']:+.{digits}f}{se}", t, df, p_text(row["p"]), p_text(row["p_holm"]), verdict]


def table_row(cells: Sequence[str]) -> str:
    """One markdown table row of `cells`."""
    return "| " + " | ".join(cells) + " |"


def table_header(titles: Sequence[str]) -> list[str]:
    """A markdown table's title row and separator."""
    return [table_row(titles), "|" + "---|" * len(titles)]


def seed_warnings(payload: dict) -> list[str]:
    """One line per comparison with fewer than MIN_SEEDS seeds on a side."""
    lines = []
    for rung, entry in payload["rungs"].items():
        rows = [*entry.get("vs_gap", {}).values(), *entry.get("vs_control", {}).values(),
                *entry.get("loc_vs_gap", {}).values(), *entry.get("two_outputs", {}).get("error_test", {}).values()]
        fewest = min((min(row["n_a"], row["n_b"]) for row in rows), default=None)
        if fewest is not None and fewest < stats.MIN_SEEDS:
            lines.append(f"Warning: the comparisons of {rung} have {fewest} seed(s) on a side; a headline "
                         f"comparison needs at least {stats.MIN_SEEDS}.")
    return lines


def _sections(payload: dict) -> dict[str, list[str]]:
    """The tables of `markdown`, by section name (saol_jax.studies.report renders any of them)."""
    seeds, rungs = payload["seeds"], payload["rungs"]
    has_val = any("val_top1_error" in entry for entry in rungs.values())
    splits = ("test", "val") if has_val else ("test",)
    titles = [f"{title}, {split}" for split in splits for title in OUTPUTS.values()]
    sections = {"error": [
        f"Top-1 error (%), {payload['dataset']}, {payload['backbone']}, mean ± std over {len(seeds)} seed(s) "
        f"{seeds}; the split of each column in its title (test: the eval split; val: the validation split).",
        "", *table_header(["rung", *titles])]}
    for rung, entry in rungs.items():
        cells = [cell(entry["top1_error"].get(out)) for out in OUTPUTS]
        if has_val:
            cells += [cell(entry.get("val_top1_error", {}).get(out)) for out in OUTPUTS]
        sections["error"].append(table_row([rung, *cells]))
    against = {"versus": ("vs_gap", "GAP-FC + CutMix's (points)"),
               "versus_control": ("vs_control", f"the multi-scale control {CONTROL}'s (GAP-FC on SAOL's fused "
                                                f"decoder features; points)")}
    for section, (key, base_title) in against.items():
        compared = {rung: entry[key] for rung, entry in rungs.items() if key in entry}
        if compared:
            sections[section] = [
                f"Test top-1 error minus {base_title}, Welch's t-test across seeds; significant: "
                f"Holm-corrected p < {stats.ALPHA} across these rows:", "",
                *table_header(["rung", "output", *TEST_COLUMNS]),
                *(table_row([rung, OUTPUTS[out], *test_cells(row)])
                  for rung, vs in compared.items() for out, row in vs.items())]
    chosen = payload.get("chosen")
    sections["choice"] = [
        f"Chosen on the validation split: {chosen['rung']}, the lowest mean validation top-1 error of the "
        f"SAOL output ({cell(chosen['val_top1_error'])}); its test top-1 error, computed once for it: "
        f"{cell(chosen['test_top1_error'])}." if chosen else
        "The runs have no validation metrics, so nothing is chosen (a choice on the test split is not made)."]
    spread = {rung: entry["attention_cells"] for rung, entry in rungs.items() if "attention_cells" in entry}
    if spread:
        sections["attention"] = [
            "Cells the attention spreads over on the eval split (exp of its entropy, mean over images; "
            "mean ± std over seeds):", "", *table_header(["rung", "att cells"]),
            *(table_row([rung, cell(cells, digits=1)]) for rung, cells in spread.items())]
    sections.update(_two_outputs_sections(payload))
    for split, key in (("test", "localisation"), ("val", "val_localisation")):
        located = {rung: entry[key] for rung, entry in rungs.items() if entry.get(key)}
        if located:
            scores = _score_columns(located)
            lines = [f"Localisation against the true boxes (saol_jax.core.localisation), {split} split, "
                     "mean ± std over seeds:", "",
                     *table_header(["rung", "map", *(f"{LOC_SCORES.get(s, s)}, {split}" for s in scores)])]
            for rung, values in located.items():
                for kind in MAPS:
                    if any(name.startswith(f"{kind}_") for name in values):
                        lines.append(table_row([rung, kind, *(cell(values.get(f"{kind}_{s}")) for s in scores)]))
            sections[key] = lines
    loc_compared = {rung: entry["loc_vs_gap"] for rung, entry in rungs.items() if entry.get("loc_vs_gap")}
    if loc_compared:
        lines = ["Test localisation of each map minus the GAP-FC + CutMix CAM's, Welch's t-test across seeds; "
                 f"significant: Holm-corrected p < {stats.ALPHA} across the rows of one score:", "",
                 *table_header(["rung", "map", "score", *TEST_COLUMNS])]
        for rung, vs in loc_compared.items():
            for name, row in vs.items():
                score = _score_of(name)
                lines.append(table_row([rung, name[:-len(score) - 1], LOC_SCORES.get(score, score),
                                        *test_cells(row, digits=3)]))
        sections["localisation_versus"] = lines
    warnings = seed_warnings(payload)
    if warnings:
        sections["warnings"] = [f"- {line}" for line in warnings]
    return sections


def _score_columns(located: dict[str, dict]) -> list[str]:
    """The localisation scores present, the known ones (LOC_SCORES) first."""
    present = {_score_of(name) for values in located.values() for name in values}
    return [s for s in LOC_SCORES if s in present] + sorted(present - set(LOC_SCORES))


SECTIONS = ("error", "versus", "versus_control", "choice", "attention", "two_outputs", "per_class", "localisation",
            "val_localisation", "localisation_versus", "warnings")


def markdown(payload: dict, sections: Sequence[str] = SECTIONS) -> str:
    """The study's tables (those of `sections` that it has), one blank line apart."""
    made = _sections(payload)
    return "\n\n".join("\n".join(made[name]) for name in sections if name in made)


def _two_outputs_sections(payload: dict) -> dict[str, list[str]]:
    """The two-outputs tables: calibration and disagreements per rung, then per-class paired tests."""
    both = {rung: entry["two_outputs"] for rung, entry in payload["rungs"].items() if "two_outputs" in entry}
    if not both:
        return {}
    score_titles = [f"{title} {OUTPUTS[head].split()[0]}" for title in TWO_OUTPUT_SCORES.values()
                    for head in compare_heads.HEADS]
    lines = ["The two outputs of the rungs that train both (saol_jax.commands.compare_heads on the eval split), "
             "mean ± std over seeds; the right shares are of the images where they disagree:", "",
             *table_header(["rung", *score_titles, *DISAGREEMENT_SCORES.values()])]
    for rung, summary in both.items():
        cells = [cell(summary[f"{head}_{score}"], digits=4) for score in TWO_OUTPUT_SCORES
                 for head in compare_heads.HEADS]
        cells += [cell(summary[key]) for key in DISAGREEMENT_SCORES]
        lines.append(table_row([rung, *cells]))
    per_class = ["Top-1 error of the SAOL output minus the GAP-FC output of the same runs (points), over all "
                 "classes and per class: paired t-test across seeds; significant: p < "
                 f"{stats.ALPHA}, Holm-corrected across the classes of a rung ('all' is one test of its own); "
                 "and the cells the attention spreads over (exp of its entropy, mean ± std):", "",
                 *table_header(["rung", "class", *TEST_COLUMNS, "att cells"])]
    for rung, summary in both.items():
        for name, row in summary["error_test"].items():
            per_class.append(table_row([rung, name, *test_cells(row),
                                        cell(summary["attention_cells"][name], digits=1)]))
    return {"two_outputs": lines, "per_class": per_class}


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


def study_name(recipe: str, workdir: str) -> str:
    """'configs/fashion_mnist.py:smoke', 'workdirs/study' -> 'fashion_mnist-smoke-study': a results folder name."""
    path, _, options = recipe.partition(":")
    parts = [os.path.splitext(os.path.basename(path))[0], *options.split(","),
             os.path.basename(os.path.normpath(workdir))]
    return re.sub(r"[^A-Za-z0-9_.=@-]+", "_", "-".join(part for part in parts if part))


def define_flags() -> None:
    """Command-line flags; defined only when this module is the program."""
    config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/fashion_mnist.py[:options].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", "workdirs/ablation", "Folder of the runs and the results.")
    flags.DEFINE_string("results", None, "Folder of the result files; default results/<recipe>-<workdir name>.")
    flags.DEFINE_integer("seeds", 5, "Seeds per rung: config.seed, config.seed + 1, ...")
    flags.DEFINE_list("rungs", list(STUDY_RUNGS), "Rungs to run: a ladder head, optionally @<SS-2 form>.")
    flags.DEFINE_integer("parallel", 1, "Runs trained at once, as separate processes sharing the device(s).",
                         lower_bound=1)
    flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    cli.arguments(argv)
    cli.configure_console()
    try:
        check_rungs(flags.FLAGS.rungs)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    recipe = {"config": config_flags.get_config_filename(flags.FLAGS["config"]),
              "overrides": dict(config_flags.get_override_values(flags.FLAGS["config"]))}
    results_dir = flags.FLAGS.results or paths.join("results", study_name(recipe["config"], workdir))
    sharding.configure_cpu_devices(config.num_cpu_devices)
    try:
        payload = run_ladder(config, workdir, seeds=flags.FLAGS.seeds, rungs=flags.FLAGS.rungs,
                             results_dir=results_dir, recipe=recipe, parallel=flags.FLAGS.parallel)
    except (*USER_ERRORS, parallel_runs.RunsFailedError) as error:
        sys.exit(f"error: {error}")
    print(markdown(payload))
    print(f"wrote ablation.md, ablation.png and ablation.json in {workdir}, the result files in {results_dir}")


run = cli.program(main, define_flags)  # console script saol-ablate

if __name__ == "__main__":
    run()
