"""The study's goals: the form and the extent map chosen on validation, each goal's verdict and its seeds."""

import pytest
from scipy import stats as scipy_stats

from saol_jax.studies import ablate, study_goals

MAPS = ("attention", "spatial", "product", "cam")


def entry(errors, val_errors, loc, val_loc, outputs=("saol", "gap")):
    """A rung's payload entry: per-seed test errors [n] and localisation {name: [n]}, their validation
    means, summarised as ablate.study_payload does."""
    runs = [{"top1_error": {out: e for out in outputs}, "localisation": {k: v[i] for k, v in loc.items()},
             "val_top1_error": {out: val_errors[i] for out in outputs},
             "val_localisation": {k: v[i] for k, v in val_loc.items()}}
            for i, e in enumerate(errors)]
    return {"runs": runs,
            "top1_error": {out: ablate.over_seeds(errors) for out in outputs},
            "localisation": {k: ablate.over_seeds(v) for k, v in loc.items()},
            "val_top1_error": {out: ablate.over_seeds(val_errors) for out in outputs},
            "val_localisation": {k: ablate.over_seeds(v) for k, v in val_loc.items()}}


def saol_loc(n, extent, pointing=0.95):
    """Localisation of a SAOL rung: MaxBoxAccV2 per map ({map: value}), attention pointing."""
    loc = {f"{m}_maxboxacc_v2": [extent[m] + 0.001 * i for i in range(n)] for m in MAPS}
    loc["attention_pointing"] = [pointing + 0.001 * i for i in range(n)]
    return loc


BASELINES = {"dataset": "d", "intensity_map": {"pointing": 0.2}, "centred_box": {"pointing": 0.14},
             "raw_image": {"box_acc_v2": 0.1}}


def payload(n=5, val_extent=None, test_extent=None, pointing=0.95, gap_errors=None):
    val_extent = val_extent or {"attention": 0.6, "spatial": 0.3, "product": 0.5, "cam": 0.4}
    test_extent = test_extent or val_extent
    gap_errors = gap_errors or [20.0 + 0.3 * i for i in range(n)]
    gap_loc = {"cam_maxboxacc_v2": [0.45 + 0.002 * i for i in range(n)]}
    return {"rungs": {
        "gap": entry(gap_errors, gap_errors, gap_loc, gap_loc, outputs=("gap",)),
        "saol": entry([10.0] * n, [5.0] * n, saol_loc(n, test_extent), saol_loc(n, val_extent), outputs=("saol",)),
        "saol_ss_sd@paste": entry([14.0 + 0.2 * i for i in range(n)], [13.0 + 0.1 * i for i in range(n)],
                                  saol_loc(n, test_extent, pointing), saol_loc(n, val_extent, pointing)),
        "saol_ss_sd@renorm": entry([15.0 + 0.2 * i for i in range(n)], [14.0 + 0.3 * i for i in range(n)],
                                   saol_loc(n, test_extent), saol_loc(n, val_extent)),
    }}


def test_the_form_is_chosen_on_validation_among_the_full_rungs_only():
    # `saol` has the lowest validation error but no SS-2 form; `paste` beats `renorm` on validation.
    assert study_goals.chosen_form(payload())["rung"] == "saol_ss_sd@paste"
    flipped = payload()
    flipped["rungs"]["saol_ss_sd@renorm"]["val_top1_error"]["saol"]["mean"] = 12.0
    assert study_goals.chosen_form(flipped)["form"] == "renorm"


def test_a_control_is_compared_but_never_chosen():
    with_control = payload()
    control = dict(with_control["rungs"]["saol_ss_sd@paste"])
    control["val_top1_error"] = {"saol": {**control["val_top1_error"]["saol"], "mean": 1.0}}  # best on validation
    with_control["rungs"]["saol_ss_sd@paste_mixed"] = control
    assert study_goals.chosen_form(with_control)["form"] == "paste"
    assert "paste_mixed" in study_goals.forms_versus_chosen(with_control)["top-1 error, SAOL output (%)"]


def test_a_form_with_fewer_than_five_seeds_is_compared_but_never_chosen():
    few = payload()
    renorm = few["rungs"]["saol_ss_sd@renorm"]
    renorm["runs"] = renorm["runs"][:1]
    renorm["val_top1_error"]["saol"]["mean"] = 1.0  # best on validation, from one seed
    assert study_goals.chosen_form(few)["form"] == "paste"
    assert "renorm" in study_goals.forms_versus_chosen(few)["top-1 error, SAOL output (%)"]


def test_the_extent_map_is_chosen_on_validation_not_on_test():
    # validation prefers the attention; test would prefer the CAM: the goal reads the attention
    judged = study_goals.judge(payload(test_extent={"attention": 0.5, "spatial": 0.3, "product": 0.5, "cam": 0.7}),
                               BASELINES)
    assert judged["goals"]["extent"]["map"] == "attention"
    assert not judged["goals"]["extent"]["met"]  # attention 0.50 vs CAM 0.45: +0.05 is not reached


def test_goals_met_with_five_seeds_and_their_figures_agree_with_scipy():
    judged = study_goals.judge(payload(), BASELINES)
    assert all(goal["met"] and goal["enough"] for goal in judged["goals"].values())
    errors = [r["top1_error"]["saol"] for r in payload()["rungs"]["saol_ss_sd@paste"]["runs"]]
    gap = [r["top1_error"]["gap"] for r in payload()["rungs"]["gap"]["runs"]]
    reference = scipy_stats.ttest_ind(errors, gap, equal_var=False)
    assert f"t = {reference.statistic:.2f}" in judged["goals"]["error"]["measured"]


def test_pointing_goal_needs_the_floor_and_the_margin_over_the_class_agnostic_baselines():
    assert not study_goals.judge(payload(pointing=0.85), BASELINES)["goals"]["pointing"]["met"]
    close = {**BASELINES, "intensity_map": {"pointing": 0.6}}
    assert not study_goals.judge(payload(), close)["goals"]["pointing"]["met"]


@pytest.mark.parametrize("n", [3, 4])
def test_fewer_than_five_seeds_is_never_called_met(n):
    few = payload(n=n)
    few["rungs"]["saol_ss_sd@paste"] = payload()["rungs"]["saol_ss_sd@paste"]  # the chosen form has 5
    judged = study_goals.judge(few, BASELINES)["goals"]
    # the comparisons with the baseline's n seeds are not judged; pointing reads the chosen form alone
    assert not judged["extent"]["enough"] and not judged["error"]["enough"] and judged["pointing"]["enough"]
    assert study_goals.markdown(few, BASELINES).count("not yet judged") == 2


def test_nothing_is_judged_without_validation_or_a_baseline():
    bare = payload()
    del bare["rungs"]["gap"]
    assert study_goals.judge(bare, BASELINES) is None
    assert "no goal is judged" in study_goals.markdown(bare, BASELINES)


def test_forms_are_compared_with_the_chosen_one_on_validation_as_scipy_does():
    compared = study_goals.forms_versus_chosen(payload())
    row = compared["top-1 error, SAOL output (%)"]["renorm"]
    reference = scipy_stats.ttest_ind([14.0 + 0.3 * i for i in range(5)], [13.0 + 0.1 * i for i in range(5)],
                                      equal_var=False)
    assert row["t"] == pytest.approx(reference.statistic) and row["p"] == pytest.approx(reference.pvalue)
    assert "| top-1 error, SAOL output (%) | renorm | 5 |" in study_goals.markdown(payload(), BASELINES)


def test_a_study_without_boxes_compares_the_forms_on_validation_error_alone():
    boxless = payload()
    for rung in boxless["rungs"].values():
        for run in rung["runs"]:
            run.pop("val_localisation")
    lines = study_goals.forms_markdown(boxless)
    assert any(line.startswith("| top-1 error, SAOL output (%) | renorm | 5 |") for line in lines)
    assert not any("MaxBoxAccV2" in line for line in lines)


def test_the_forms_table_says_why_it_is_empty():
    single = payload()
    del single["rungs"]["saol_ss_sd@renorm"]
    assert study_goals.forms_markdown(single) == [
        "The rule chooses `paste`, the only SS-2 form run: nothing to compare it with."]
    for run in single["rungs"]["saol_ss_sd@paste"]["runs"][1:]:
        single["rungs"]["saol_ss_sd@paste"]["runs"].remove(run)
    assert "none is chosen" in study_goals.forms_markdown(single)[0]


def test_a_control_is_compared_with_the_form_whose_mechanism_it_measures():
    with_control = payload()
    n = 5
    with_control["rungs"]["saol_ss_sd@paste_mixed"] = entry(
        [15.0] * n, [13.5 + 0.2 * i for i in range(n)], saol_loc(n, {"attention": 0.5, "spatial": 0.3, "product": 0.5,
                                                                    "cam": 0.4}),
        saol_loc(n, {"attention": 0.5, "spatial": 0.3, "product": 0.5, "cam": 0.4}))
    compared = study_goals.controls_versus_their_forms(with_control)
    row = compared["top-1 error, SAOL output (%)"]["paste_mixed"]
    reference = scipy_stats.ttest_ind([13.5 + 0.2 * i for i in range(n)], [13.0 + 0.1 * i for i in range(n)],
                                      equal_var=False)
    assert row["t"] == pytest.approx(reference.statistic) and row["p"] == pytest.approx(reference.pvalue)
    assert compared["attention MaxBoxAccV2"]["paste_mixed"]["difference"] == pytest.approx(-0.1)
    assert "| attention MaxBoxAccV2 | paste_mixed | paste | 5 |" in study_goals.markdown(with_control, BASELINES)
    del with_control["rungs"]["saol_ss_sd@paste"]  # nothing to compare the control with
    assert study_goals.controls_markdown(with_control) == []
