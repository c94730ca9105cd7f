"""The localisation study's goals, judged from its result files (README "The study").

The SS-2 form and the map for box extent are chosen on the validation split;
every goal is then read once on the test split for those choices:

1. the chosen rung's attention points at the target: pointing >= 0.90, and
   >= 0.40 above the best class-agnostic baseline's pointing (saol_jax.studies.baselines);
2. its best map for box extent beats a GAP-FC + CutMix model's CAM by >= 0.05
   MaxBoxAccV2, Welch's p < 0.05;
3. its SAOL output's top-1 error is below GAP-FC + CutMix's, Welch's p < 0.05;
   the multi-scale control `gap_ms` against the same baseline says whether a
   gain is the attention's or the decoder's extra stages'.

A comparison with fewer than MIN_SEEDS seeds on a side is never called met.
"""

from __future__ import annotations

from saol_jax.core.losses import SS2_CONTROLS
from saol_jax.studies import ablate, stats

FULL_FORM_PREFIX = "saol_ss_sd@"
POINTING_FLOOR = 0.90
POINTING_MARGIN = 0.40
BOX_MARGIN = 0.05
EXTENT_SCORE = "maxboxacc_v2"


def chosen_form(payload: dict) -> dict | None:
    """The SAOL + SS + SD rung (one per SS-2 form) with the lowest mean validation top-1 error of the
    SAOL output, among those with MIN_SEEDS seeds (a form with fewer is compared, never chosen) and
    not a control (SS2_CONTROLS); None where no such rung has validation metrics."""
    candidates = {rung: entry for rung, entry in payload["rungs"].items()
                  if rung.startswith(FULL_FORM_PREFIX) and rung[len(FULL_FORM_PREFIX):] not in SS2_CONTROLS
                  and "val_top1_error" in entry and _seeds(entry) >= stats.MIN_SEEDS}
    if not candidates:
        return None
    rung = min(candidates, key=lambda r: candidates[r]["val_top1_error"]["saol"]["mean"])
    return {"rung": rung, "form": rung[len(FULL_FORM_PREFIX):],
            "val_top1_error": candidates[rung]["val_top1_error"]["saol"]}


def extent_map(entry: dict) -> str:
    """The map of a rung with the highest mean validation MaxBoxAccV2 (its box-extent map)."""
    suffix = f"_{EXTENT_SCORE}"
    scores = {name[:-len(suffix)]: summary["mean"] for name, summary in entry["val_localisation"].items()
              if name.endswith(suffix)}
    return max(scores, key=scores.get)


def _seeds(entry: dict) -> int:
    return len(entry["runs"])


def _enough(*entries: dict) -> bool:
    return all(_seeds(e) >= stats.MIN_SEEDS for e in entries)


def _test_text(test: stats.TTest) -> str:
    return (f"{test.difference:+.3f} ± {test.se:.3f} (t = {test.t:.2f}, df = {test.df:.1f}, "
            f"p = {ablate.p_text(test.p)})")


def _verdict(met: bool, enough: bool) -> str:
    if not enough:
        return f"not yet judged (fewer than {stats.MIN_SEEDS} seeds a side)"
    return "met" if met else "missed"


def pointing_goal(payload: dict, rung: str, baselines: dict) -> dict:
    """Goal 1: the chosen rung's attention pointing (test) against the floor and the best class-agnostic
    pointing of the baselines report (same dataset, test split)."""
    entry = payload["rungs"][rung]
    pointing = entry["localisation"]["attention_pointing"]
    agnostic = max(scores["pointing"] for scores in baselines.values()
                   if isinstance(scores, dict) and "pointing" in scores)
    met = pointing["mean"] >= POINTING_FLOOR and pointing["mean"] - agnostic >= POINTING_MARGIN
    return {"met": met, "enough": _enough(entry),
            "measured": f"{pointing['mean']:.3f} ± {pointing['std']:.3f} (best class-agnostic: {agnostic:.2f}; "
                        f"{_seeds(entry)} seeds)"}


def extent_goal(payload: dict, rung: str) -> dict:
    """Goal 2: the chosen rung's box-extent map (chosen on validation) minus the GAP-FC baseline's CAM,
    test MaxBoxAccV2, Welch's t-test across seeds (one pre-stated test)."""
    entry, base = payload["rungs"][rung], payload["rungs"]["gap"]
    kind = extent_map(entry)
    test = stats.welch([r["localisation"][f"{kind}_{EXTENT_SCORE}"] for r in entry["runs"]],
                       [r["localisation"][f"cam_{EXTENT_SCORE}"] for r in base["runs"]])
    met = test.difference >= BOX_MARGIN and test.p < stats.ALPHA
    return {"met": met, "enough": _enough(entry, base), "map": kind,
            "measured": f"map `{kind}` (chosen on validation): {_test_text(test)}"}


def error_goal(payload: dict, rung: str) -> dict:
    """Goal 3: the chosen rung's SAOL-output test top-1 error minus GAP-FC + CutMix's (Welch), and the
    multi-scale GAP-FC control's difference where it ran."""
    rungs, base = payload["rungs"], payload["rungs"]["gap"]
    base_errors = [r["top1_error"]["gap"] for r in base["runs"]]
    test = stats.welch([r["top1_error"]["saol"] for r in rungs[rung]["runs"]], base_errors)
    measured = f"{_test_text(test)} points"
    if "gap_ms" in rungs:
        control = stats.welch([r["top1_error"]["gap"] for r in rungs["gap_ms"]["runs"]], base_errors)
        measured += f"; `gap_ms`: {_test_text(control)} points ({_seeds(rungs['gap_ms'])} seeds)"
    return {"met": test.difference < 0 and test.p < stats.ALPHA, "enough": _enough(rungs[rung], base),
            "measured": measured}


GOALS = (
    ("attention pointing ≥ 0.90, and ≥ 0.40 above the best class-agnostic pointing", "pointing"),
    ("SAOL's box-extent map (chosen on validation) ≥ 0.05 MaxBoxAccV2 above the GAP-FC + CutMix CAM, "
     "p < 0.05", "extent"),
    ("SAOL + SS + SD top-1 error below GAP-FC + CutMix, p < 0.05; the multi-scale control `gap_ms`", "error"),
)


def judge(payload: dict, baselines: dict) -> dict | None:
    """Every goal for the rung `chosen_form` picks; None where nothing can be chosen or no baseline ran."""
    chosen = chosen_form(payload)
    if chosen is None or "gap" not in payload["rungs"]:
        return None
    rung = chosen["rung"]
    judged = {"pointing": pointing_goal(payload, rung, baselines), "extent": extent_goal(payload, rung),
              "error": error_goal(payload, rung)}
    return {"chosen": chosen, "goals": judged}


# Validation scores the SS-2 forms are compared on: (title, per-run getter of a run entry).
FORM_SCORES = {
    "top-1 error, SAOL output (%)": lambda run: run["val_top1_error"]["saol"],
    "attention MaxBoxAccV2": lambda run: run["val_localisation"][f"attention_{EXTENT_SCORE}"],
}


def _versus(payload: dict, pairs: dict[str, tuple[str, str]]) -> dict[str, dict[str, dict]]:
    """Validation scores (FORM_SCORES) of each pair's first rung minus its second: Welch's t-test
    across seeds, one Holm family per score; scores some run lacks (no boxes) are left out.
    {score: {label: test}}."""
    runs = {rung: payload["rungs"][rung]["runs"] for pair in pairs.values() for rung in pair}
    compared = {}
    for title, value in FORM_SCORES.items():
        if pairs and all(_scored(value, run) for rung_runs in runs.values() for run in rung_runs):
            compared[title] = ablate.tested({label: ([value(run) for run in runs[rung]],
                                                     [value(run) for run in runs[base]])
                                             for label, (rung, base) in pairs.items()})
    return compared


def forms_versus_chosen(payload: dict) -> dict[str, dict[str, dict]]:
    """Each other SAOL + SS + SD form minus the chosen one on the validation split, per FORM_SCORES
    title: Welch's t-test across seeds, one Holm family per score. {score: {form: test}}."""
    chosen = chosen_form(payload)
    if chosen is None:
        return {}
    others = [rung for rung, entry in payload["rungs"].items()
              if rung.startswith(FULL_FORM_PREFIX) and rung != chosen["rung"] and "val_top1_error" in entry]
    return _versus(payload, {rung[len(FULL_FORM_PREFIX):]: (rung, chosen["rung"]) for rung in others})


def controls_versus_their_forms(payload: dict) -> dict[str, dict[str, dict]]:
    """Each SS-2 control minus the form whose mechanism it measures (SS2_CONTROLS), on the validation
    split, where both ran with validation metrics. {score: {control: test}}."""
    rungs = payload["rungs"]
    pairs = {control: (FULL_FORM_PREFIX + control, FULL_FORM_PREFIX + form) for control, form in SS2_CONTROLS.items()}
    return _versus(payload, {control: pair for control, pair in pairs.items()
                             if all(r in rungs and "val_top1_error" in rungs[r] for r in pair)})


def _scored(value, run: dict) -> bool:
    try:
        value(run)
    except KeyError:
        return False
    return True


def forms_markdown(payload: dict) -> list[str]:
    """The forms-versus-chosen table's lines; one line where fewer than two forms can be compared."""
    chosen = chosen_form(payload)
    if chosen is None:
        return [f"No SAOL + SS + SD form has {stats.MIN_SEEDS} seeds with validation metrics yet: none is chosen."]
    compared = forms_versus_chosen(payload)
    if not any(compared.values()):
        return [f"The rule chooses `{chosen['form']}`, the only SS-2 form run: nothing to compare it with."]
    lines = [f"Each SS-2 form minus the chosen `{chosen['form']}` on the validation split, Welch's t-test across "
             f"seeds; significant: Holm-corrected p < {stats.ALPHA} across the forms of one score:", "",
             *ablate.table_header(["score", "form", "seeds", *ablate.TEST_COLUMNS])]
    for title, rows in compared.items():
        digits = 2 if "error" in title else 3
        lines += [ablate.table_row([title, form, str(row["n_a"]), *ablate.test_cells(row, digits)])
                  for form, row in rows.items()]
    return lines


def controls_markdown(payload: dict) -> list[str]:
    """The controls-versus-their-forms table's lines (none where no control ran beside its form)."""
    compared = controls_versus_their_forms(payload)
    if not compared:
        return []
    lines = ["Each SS-2 control minus the form whose mechanism it measures, on the validation split, Welch's "
             f"t-test across seeds; significant: Holm-corrected p < {stats.ALPHA} across the controls of one score:",
             "", *ablate.table_header(["score", "control", "form", "seeds", *ablate.TEST_COLUMNS])]
    for title, rows in compared.items():
        digits = 2 if "error" in title else 3
        lines += [ablate.table_row([title, control, SS2_CONTROLS[control], str(row["n_a"]),
                                    *ablate.test_cells(row, digits)])
                  for control, row in rows.items()]
    return lines


def markdown(payload: dict, baselines: dict) -> str:
    """The goals table: what each goal asks, the test figures for the chosen form, met or missed."""
    judged = judge(payload, baselines)
    if judged is None:
        return (f"No GAP-FC baseline, or no SAOL + SS + SD rung with validation metrics and {stats.MIN_SEEDS} "
                "seeds, yet: no goal is judged.")
    chosen = judged["chosen"]
    val = chosen["val_top1_error"]
    lines = [f"Goals, judged on the test split for the choices made on validation: the SS-2 form "
             f"`{chosen['form']}` (lowest validation top-1 error of the SAOL output among the SAOL + SS + SD "
             f"rungs with {stats.MIN_SEEDS} seeds, controls aside, {val['mean']:.2f} ± {val['std']:.2f}); "
             f"differences are test figures, ± their standard "
             f"error, Welch's t-test across seeds.", "",
             "| goal | measured (test) | verdict |", "|---|---|---|"]
    for title, key in GOALS:
        goal = judged["goals"][key]
        lines.append(f"| {title} | {goal['measured']} | {_verdict(goal['met'], goal['enough'])} |")
    controls = controls_markdown(payload)
    return "\n".join([*lines, "", *forms_markdown(payload), *([""] + controls if controls else [])])
