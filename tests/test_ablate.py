"""The ablation ladder on the tiny dataset: table, plot, JSON, skipping finished runs."""

from __future__ import annotations

import json
import os

import matplotlib.image
import pytest
import scipy.stats

from commands import run_command
from configs import fashion_mnist
import saol_jax
from saol_jax.core.ladder import BASE_LOSS, split_rung
from saol_jax.studies import ablate, parallel_runs, report, results
from saol_jax.core.config_check import check_fields
from saol_jax.core.ladder import PASTE_VARIANTS

RUNGS = ("gap", "saol", "saol_ss_sd@paste")  # the paste form also checks its extra forward pass in the trainer
RECIPE = {"config": "configs/fashion_mnist.py:smoke", "overrides": {"dataset.name": "tiny"}}


def smoke_config(dataset: dict):
    config = fashion_mnist.get_config("smoke")
    config.dataset.name = dataset["name"]
    config.dataset.data_dir = dataset["data_dir"]
    config.num_cpu_devices = 0
    return config


@pytest.fixture(scope="module")
def ladder(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ablation"))
    results_dir = os.path.join(workdir, "results")
    return workdir, ablate.run_ladder(smoke_config(tiny_dataset), workdir, seeds=2, rungs=RUNGS,
                                      results_dir=results_dir, recipe=RECIPE)


def test_every_rung_and_seed_has_its_own_run(ladder):
    workdir, payload = ladder
    assert payload["seeds"] == [0, 1]
    for rung in RUNGS:
        runs = payload["rungs"][rung]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for run in runs:
            assert run["workdir"] == os.path.join(workdir, rung, f"seed{run['seed']}")
            with open(os.path.join(run["workdir"], "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            assert config["seed"] == run["seed"]
            assert config["model"]["head"] == ("gap" if rung == "gap" else "saol")
            # the rung's form, else the recipe's default
            assert config["loss"]["ss2_form"] == (split_rung(rung)[1] or BASE_LOSS["ss2_form"])
            assert all(0.0 <= e <= 100.0 for e in run["top1_error"].values())


def test_outputs_reported_per_rung(ladder):
    _, payload = ladder
    assert set(payload["rungs"]["gap"]["top1_error"]) == {"gap"}
    assert set(payload["rungs"]["saol"]["top1_error"]) == {"saol"}  # its GAP-FC branch is not trained
    assert set(payload["rungs"][RUNGS[2]]["top1_error"]) == {"saol", "gap"}
    assert set(payload["rungs"][RUNGS[2]]["vs_gap"]) == {"saol", "gap"}
    assert "vs_gap" not in payload["rungs"]["gap"]


def test_table_plot_and_json_are_written(ladder):
    workdir, payload = ladder
    with open(os.path.join(workdir, "ablation.md"), encoding="utf-8") as f:
        table = f.read()
    first = table.split("\n\n")[1]  # the error table, after its title
    rows = {line.split("|")[1].strip(): line for line in first.splitlines() if line.startswith("| ")}
    assert "n/a" in rows["gap"].split("|")[2]  # no SAOL output on the GAP-FC baseline
    assert "±" in rows[RUNGS[2]].split("|")[2] and "±" in rows[RUNGS[2]].split("|")[3]
    assert "Test top-1 error minus GAP-FC + CutMix's (points), Welch's t-test" in table
    assert "Warning: the comparisons of saol have 2 seed(s) on a side" in table
    assert "Localisation" not in table  # the tiny dataset has no boxes
    with open(os.path.join(workdir, "ablation.json"), encoding="utf-8") as f:  # NaN-safe equality
        assert json.dumps(json.load(f), sort_keys=True) == json.dumps(payload, sort_keys=True)
    image = matplotlib.image.imread(os.path.join(workdir, "ablation.png"))
    assert image.ndim == 3 and image.std() > 0


def test_rerun_skips_finished_runs(ladder, tiny_dataset):
    workdir, payload = ladder
    run_dir = payload["rungs"]["gap"]["runs"][0]["workdir"]
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        before = f.read()
    again = ablate.run_ladder(smoke_config(tiny_dataset), workdir, seeds=2, rungs=RUNGS)
    assert json.dumps(again, sort_keys=True) == json.dumps(payload, sort_keys=True)  # NaN-safe equality
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        assert f.read() == before


def test_every_saol_rung_reports_its_attention_spread(ladder):
    workdir, payload = ladder
    assert "attention_cells" not in payload["rungs"]["gap"]
    grid = 3 * 3  # the tiny dataset's 12x12 images through the smoke backbone's stride 4
    for rung in RUNGS[1:]:
        entry = payload["rungs"][rung]
        cells = [run["attention_cells"] for run in entry["runs"]]
        assert all(1.0 <= c <= grid for c in cells)
        assert entry["attention_cells"]["mean"] == pytest.approx(sum(cells) / len(cells))
        with open(os.path.join(entry["runs"][0]["workdir"], "compare_heads.json"), encoding="utf-8") as f:
            assert json.load(f)["attention_cells"]["mean"] == cells[0]
    with open(os.path.join(workdir, "ablation.md"), encoding="utf-8") as f:
        table = f.read()
    section = table.split("Cells the attention spreads over")[1].split("\n\n")[1]  # the table after its title
    rows = [line.split("|")[1].strip() for line in section.splitlines()]
    assert rows == ["rung", "---", *RUNGS[1:]]


def test_rungs_with_both_outputs_compare_them_per_run(ladder):
    workdir, payload = ladder
    assert "two_outputs" not in payload["rungs"]["gap"]["runs"][0]
    assert "two_outputs" not in payload["rungs"]["saol"]["runs"][0]
    for run in payload["rungs"][RUNGS[2]]["runs"]:
        report = run["two_outputs"]
        assert os.path.isfile(os.path.join(run["workdir"], "compare_heads.json"))
        # compare_heads' full pass over the eval split agrees with the trainer's final evaluation.
        for out in ("saol", "gap"):
            assert 100.0 * report[out]["top1_error"] == pytest.approx(run["top1_error"][out], abs=1e-6)
    with open(os.path.join(workdir, "ablation.md"), encoding="utf-8") as f:
        table = f.read()
    assert "Top-1 error of the SAOL output minus the GAP-FC output of the same runs" in table


def test_result_files_and_the_report_render_the_study(ladder):
    workdir, payload = ladder
    results_dir = os.path.join(workdir, "results")
    for rung in RUNGS:
        for run in payload["rungs"][rung]["runs"]:
            with open(os.path.join(results_dir, rung, f"seed{run['seed']}.json"), encoding="utf-8") as f:
                record = json.load(f)
            assert (record["rung"], record["seed"], record["recipe"]) == (rung, run["seed"], RECIPE)
            assert record["config"]["seed"] == run["seed"] and record["step"] == run["step"] > 0
            assert record["software"]["version"] == saol_jax.__version__
            for out, error in run["top1_error"].items():
                assert 100.0 * (1.0 - record["metrics"]["test"][f"{out}_top1"]) == pytest.approx(error)
            assert ("compare_heads" in record) == (rung != "gap")
    with open(os.path.join(results_dir, "study.json"), encoding="utf-8") as f:
        study = json.load(f)
    assert study["recipe"] == RECIPE and set(study["rungs"]) == set(RUNGS)
    # The tables rendered from the result files alone are the study's own.
    assert report.render(results_dir) == ablate.markdown(payload)


def _report(saol_errors: list[float], gap_errors: list[float], rate: float) -> dict:
    names = [str(k) for k in range(len(saol_errors))]

    def head(errors):
        return {"top1_error": sum(errors) / len(errors), "per_class_error": dict(zip(names, errors)),
                "ece": 0.03, "nll": 0.25}

    return {"class_counts": dict.fromkeys(names, 100), "saol": head(saol_errors), "gap": head(gap_errors),
            "disagreement": {"rate": rate, "saol_right": 0.4, "gap_right": 0.45},
            "attention_cells": {"mean": 5.0, "per_class": dict(zip(names, [4.0, 6.0]))}}


def test_two_outputs_summary_and_per_class_table():
    reports = [_report([0.10, 0.20], [0.12, 0.20], 0.03), _report([0.10, 0.22], [0.13, 0.20], 0.02),
               _report([0.11, 0.19], [0.13, 0.20], 0.025)]
    summary = ablate.summarise_two_outputs(reports)
    assert summary["rate"]["mean"] == pytest.approx(2.5)
    assert summary["saol_ece"] == {"mean": pytest.approx(0.03), "std": pytest.approx(0.0)}
    # Class 0: SAOL − GAP-FC = -2, -3, -2 points: mean -2.33, SE 0.33, t = -7.0 with df 2, p = 0.0198,
    # Holm across the two classes 0.040: significant. Class 1: 0, +2, -1 points: not.
    test = summary["error_test"]["0"]
    assert test["difference"] == pytest.approx(-7.0 / 3) and test["t"] == pytest.approx(-7.0) and test["df"] == 2
    assert test["p"] == pytest.approx(scipy.stats.ttest_rel([10, 10, 11], [12, 13, 13]).pvalue)
    assert test["p_holm"] == pytest.approx(2 * test["p"]) and test["significant"]
    table = ablate.markdown({"dataset": "d", "backbone": "b", "seeds": [0, 1, 2], "rungs": {
        "saol_ss_sd": {"runs": [], "top1_error": {}, "localisation": {}, "two_outputs": summary}}})
    assert "| saol_ss_sd | 0 | -2.33 ± 0.33 | -7.00 | 2.0 | 0.020 | 0.040 | yes | 4.0 ± 0.0 |" in table
    assert "| saol_ss_sd | 1 | +0.33 ± 0.88 | 0.38 | 2.0 | 0.742 | 0.742 | no | 6.0 ± 0.0 |" in table
    # All classes (equal counts): -1, -0.5, -1.5 points, SE 0.29, t = -3.46: beyond two standard errors,
    # the old criterion, but p = 0.074 with df 2: not significant.
    assert "| saol_ss_sd | all | -1.00 ± 0.29 | -3.46 | 2.0 | 0.074 | 0.074 | no | 5.0 ± 0.0 |" in table
    assert "| saol_ss_sd | 0.0300 ± 0.0000 | 0.0300 ± 0.0000 | 0.2500 ± 0.0000 | 0.2500 ± 0.0000 | 2.50 ± 0.50 |" in table
    assert "Warning: the comparisons of saol_ss_sd have 3 seed(s) on a side" in table


def test_rungs_with_an_ss2_form():
    base = smoke_config({"name": "tiny_shapes", "data_dir": None})
    config = ablate.rung_config(base, "saol_ss@mass_mix", seed=3)
    assert (config.model.head, config.loss.ss2_form, config.loss.sd, config.seed) == ("saol", "mass_mix", 0.0, 3)
    assert ablate.rung_config(base, "saol_ss", seed=0).loss.ss2_form == base.loss.ss2_form
    ablate.check_rungs(ablate.STUDY_RUNGS)
    with pytest.raises(ValueError, match="saol_ss@area"):
        ablate.check_rungs(["saol_ss@area"])



@pytest.mark.parametrize("variant", sorted(PASTE_VARIANTS))
def test_rungs_with_a_cheaper_paste_target(variant):
    # A `paste` variant is a rung suffix that sets its loss fields; the others keep the recipe's value,
    # and the result passes the config check.
    base = smoke_config({"name": "tiny_shapes", "data_dir": None})
    config = ablate.rung_config(base, f"saol_ss_sd@{variant}", seed=0)
    ablate.check_rungs([f"saol_ss_sd@{variant}"])
    assert config.loss.ss2_form == "paste"
    for field in ("paste_clean_fraction", "paste_clean_scale"):
        assert config.loss[field] == PASTE_VARIANTS[variant].get(field, base.loss[field])
    assert config.loss.to_dict() != base.loss.to_dict()
    check_fields(config)


def test_versus_baseline_and_localisation_table():
    def entry(errors, pointing=None):
        runs = [{"top1_error": {"gap": e}, "localisation": {}} for e in errors]
        loc = {} if pointing is None else {"cam_pointing": ablate.over_seeds(pointing)}
        return {"runs": runs, "top1_error": {"gap": ablate.over_seeds(errors)}, "localisation": loc}

    base, better, same = entry([10.0, 10.2, 9.8]), entry([9.0, 9.1, 8.9], pointing=[0.5, 0.7]), entry([10.1, 9.6, 10.3])
    vs = ablate.versus_baseline({"gap": base, "saol_ss_sd": better, "saol_ss": same})
    reference = scipy.stats.ttest_ind([9.0, 9.1, 8.9], [10.0, 10.2, 9.8], equal_var=False)
    row = vs["saol_ss_sd"]["gap"]
    # diff -1.0; SE = sqrt(0.01 / 3 + 0.04 / 3) = 0.129; Welch's df 2.94.
    assert row["difference"] == pytest.approx(-1.0) and row["se"] == pytest.approx((0.05 / 3) ** 0.5)
    assert (row["t"], row["df"], row["p"]) == pytest.approx((reference.statistic, reference.df, reference.pvalue))
    # Holm across the two rungs: the smaller p doubled.
    assert row["p_holm"] == pytest.approx(2 * reference.pvalue) and row["significant"]
    assert not vs["saol_ss"]["gap"]["significant"]
    better["vs_gap"] = vs["saol_ss_sd"]
    table = ablate.markdown({"dataset": "d", "backbone": "b", "seeds": [0, 1, 2],
                             "rungs": {"gap": base, "saol_ss_sd": better}})
    assert (f"| saol_ss_sd | GAP-FC output | -1.00 ± 0.13 | -7.75 | 2.9 | {reference.pvalue:.3f} | "
            f"{2 * reference.pvalue:.3f} | yes |") in table
    assert "| saol_ss_sd | n/a | 9.00 ± 0.10 |" in table
    assert "| rung | map | pointing, test |" in table and "| saol_ss_sd | cam | 0.60 ± 0.14 |" in table
    assert "nothing is chosen" in table  # no validation metrics


def test_saol_rungs_are_compared_with_the_multi_scale_control():
    def entry(errors, outputs=("gap",)):
        runs = [{"top1_error": {out: e for out in outputs}, "localisation": {}} for e in errors]
        return {"runs": runs, "top1_error": {out: ablate.over_seeds(errors) for out in outputs}, "localisation": {}}

    control, saol = entry([8.0, 8.4, 8.2]), entry([9.0, 9.3, 8.8], outputs=("saol", "gap"))
    payload_rungs = {"gap": entry([10.0, 10.2, 9.8]), "gap_ms": control, "saol_ss_sd": saol}
    vs = ablate.versus_control(payload_rungs)
    assert set(vs) == {"saol_ss_sd"}  # neither the baseline nor the control itself
    reference = scipy.stats.ttest_ind([9.0, 9.3, 8.8], [8.0, 8.4, 8.2], equal_var=False)
    row = vs["saol_ss_sd"]["saol"]
    assert row["difference"] == pytest.approx(9.0333 - 8.2, abs=1e-3)
    assert (row["t"], row["df"], row["p"]) == pytest.approx((reference.statistic, reference.df, reference.pvalue))
    assert row["p_holm"] == pytest.approx(min(1.0, 2 * reference.pvalue))  # two rows: both outputs
    saol["vs_control"] = vs["saol_ss_sd"]
    table = ablate.markdown({"dataset": "d", "backbone": "b", "seeds": [0, 1, 2], "rungs": payload_rungs},
                            ["versus_control", "warnings"])
    assert "minus the multi-scale control gap_ms's" in table
    assert f"| saol_ss_sd | SAOL output | +0.83 ± 0.19 | {reference.statistic:.2f} |" in table
    assert "Warning: the comparisons of saol_ss_sd have 3 seed(s)" in table
    assert ablate.markdown({"dataset": "d", "backbone": "b", "seeds": [0], "rungs": {"gap": control}},
                           ["versus_control"]) == ""  # no control run: no table


def test_localisation_leaves_out_an_untrained_cam():
    results = {f"loc_{kind}_{score}": 0.5 for kind in ("attention", "spatial", "product", "cam")
               for score in ("pointing", "maxboxacc_v2")}
    # Every score the metrics have, read generically (not only the table's known ones).
    assert set(ablate.localisation(results, "saol_ss@paste")) == {
        f"{kind}_{score}" for kind in ("attention", "spatial", "product") for score in ("pointing", "maxboxacc_v2")}
    assert set(ablate.localisation(results, "saol_ss_sd@paste")) == {
        f"{kind}_{score}" for kind in ("attention", "spatial", "product", "cam")
        for score in ("pointing", "maxboxacc_v2")}
    assert ablate.localisation({"saol_top1": 0.9}, "saol") == {}


def test_summary_statistics():
    assert ablate.over_seeds([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5)}
    assert ablate.cell(ablate.over_seeds([5.0])) == "5.00"
    assert ablate.cell(None) == "n/a"


def test_cli_rejects_an_unknown_rung(tmp_path):
    proc = run_command(
        "studies.ablate", ["--config", "configs/fashion_mnist.py:smoke", "--workdir", str(tmp_path), "--rungs", "gap,nope"],
        timeout=120,
    )
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_study_name():
    assert ablate.study_name("configs/fashion_mnist.py:smoke", "workdirs/study/") == "fashion_mnist-smoke-study"
    assert ablate.study_name("configs/cluttered_fashion_mnist.py", "gs://b/runs/x") == "cluttered_fashion_mnist-x"


def test_final_metrics_keep_what_the_run_logged_at_its_last_step(tmp_path):
    events = [{"event": "eval", "step": 5, "eval/saol_top1": 0.1, "val/saol_top1": 0.2},
              {"event": "train", "step": 10, "loss/total": 1.0},
              {"event": "eval", "step": 10, "eval/saol_top1": 0.5, "val/saol_top1": 0.6, "val/loc_attention_iou": 0.3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    step, metrics = ablate.final_metrics(str(tmp_path), {"eval/saol_top1": 0.5})
    assert step == 10
    assert metrics == {"eval/saol_top1": 0.5, "val/saol_top1": 0.6, "val/loc_attention_iou": 0.3}
    entry = ablate.run_entry({"rung": "saol", "seed": 0, "metrics": results.split_metrics(metrics)})
    assert entry["val_top1_error"] == {"saol": pytest.approx(40.0)} and entry["top1_error"] == {"saol": 50.0}
    assert entry["val_localisation"] == {"attention_iou": 0.3} and entry["localisation"] == {}


def test_the_choice_is_made_on_the_validation_split():
    def entry(val, test):
        return {"top1_error": {"saol": ablate.over_seeds(test)}, "val_top1_error": {"saol": ablate.over_seeds(val)}}

    # saol_ss is the better on the validation split, saol on the test split: saol_ss is chosen.
    chosen = ablate.choose({"saol": entry([20.0, 21.0], [18.0, 18.5]), "saol_ss": entry([19.0, 19.5], [19.0, 19.2])})
    assert chosen["rung"] == "saol_ss" and chosen["test_top1_error"]["mean"] == pytest.approx(19.1)
    assert ablate.choose({"saol": {"top1_error": {"saol": ablate.over_seeds([18.0, 19.0])}}}) is None


def test_parallel_runs_give_the_sequential_results(ladder, tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("SAOL_JAX_COMPILATION_CACHE", str(tmp_path / "compiled"))
    workdir = str(tmp_path / "parallel")
    payload = ablate.run_ladder(smoke_config(tiny_dataset), workdir, seeds=2, rungs=("gap",), parallel=2)
    out = capsys.readouterr().out
    assert out.count("started gap seed") == 2 and "[2/2] gap seed" in out
    assert "FAILED" not in out
    want = [run["top1_error"] for run in ladder[1]["rungs"]["gap"]["runs"]]
    assert [run["top1_error"] for run in payload["rungs"]["gap"]["runs"]] == want
    for seed in (0, 1):
        assert "eval at step" in open(os.path.join(workdir, "gap", f"seed{seed}.log"), encoding="utf-8").read()


def test_parallel_runs_report_each_failure_and_go_on(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    config = smoke_config(tiny_dataset)
    config.dataset.name = "no_such_dataset"
    with pytest.raises(parallel_runs.RunsFailedError, match="2 of 2 runs failed") as failed:
        ablate.run_ladder(config, str(tmp_path), seeds=2, rungs=("gap",), parallel=2)
    out = capsys.readouterr().out
    assert out.count("FAILED") == 2 and "no_such_dataset" in out
    assert "gap seed 0" in str(failed.value) and "gap seed 1" in str(failed.value)


def test_parallel_runs_go_seed_by_seed(tiny_dataset, tmp_path, monkeypatch):
    # Seed-major: a study stopped early keeps its seeds balanced, and each rung compiles once first.
    started = []

    def record(jobs, parallel):
        started.extend(job.name for job in jobs)
        raise parallel_runs.RunsFailedError("stopped")

    monkeypatch.setattr(parallel_runs, "train_all", record)
    with pytest.raises(parallel_runs.RunsFailedError):
        ablate.run_ladder(smoke_config(tiny_dataset), str(tmp_path), seeds=2, rungs=("gap", "saol"), parallel=2)
    assert started == ["gap seed 0", "saol seed 0", "gap seed 1", "saol seed 1"]
