"""saol_jax.studies.report: tables rendered from hand-written result files into markdown, and checked against them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.stats

from commands import run_command
from saol_jax.studies import report, results

SEEDS = [0, 1, 2, 3, 4]
RUNG = "saol_ss_sd@paste"
# Final metrics per rung and split, one value per seed (fractions, as the trainer logs them).
METRICS = {
    "gap": {
        "test": {"gap_top1": [0.780, 0.775, 0.782, 0.779, 0.771], "saol_top1": [0.1, 0.1, 0.1, 0.1, 0.1],
                 "loc_cam_maxboxacc_50": [0.19, 0.18, 0.20, 0.19, 0.17],
                 "loc_cam_maxboxacc_v2": [0.30, 0.31, 0.29, 0.30, 0.32]},
        "val": {"gap_top1": [0.790, 0.785, 0.788, 0.781, 0.792], "saol_top1": [0.1, 0.1, 0.1, 0.1, 0.1],
                "loc_cam_maxboxacc_50": [0.21, 0.18, 0.19, 0.20, 0.18],
                "loc_cam_maxboxacc_v2": [0.31, 0.30, 0.30, 0.29, 0.33]},
    },
    RUNG: {
        "test": {"saol_top1": [0.806, 0.801, 0.810, 0.803, 0.799], "gap_top1": [0.786, 0.781, 0.790, 0.779, 0.773],
                 "loc_attention_maxboxacc_50": [0.67, 0.63, 0.70, 0.66, 0.68],
                 "loc_attention_maxboxacc_v2": [0.55, 0.52, 0.58, 0.54, 0.56],
                 "loc_cam_maxboxacc_50": [0.14, 0.16, 0.12, 0.15, 0.19],
                 "loc_cam_maxboxacc_v2": [0.28, 0.33, 0.30, 0.31, 0.29]},
        "val": {"saol_top1": [0.812, 0.808, 0.815, 0.806, 0.809], "gap_top1": [0.795, 0.788, 0.792, 0.784, 0.790],
                "loc_attention_maxboxacc_50": [0.66, 0.64, 0.71, 0.65, 0.69],
                "loc_attention_maxboxacc_v2": [0.56, 0.51, 0.57, 0.55, 0.55],
                "loc_cam_maxboxacc_50": [0.15, 0.15, 0.13, 0.16, 0.18],
                "loc_cam_maxboxacc_v2": [0.29, 0.32, 0.31, 0.30, 0.28]},
    },
}
DOC = "# A document\n\nSome text.\n\n<!-- results: toy -->\nstale\n<!-- /results -->\n\nMore text.\n"


@pytest.fixture
def root(tmp_path):
    """A results root with the study `toy`: 5 seeds x 2 rungs, written by hand (not by saol_jax.studies.results)."""
    for rung, splits in METRICS.items():
        os.makedirs(tmp_path / "toy" / rung)
        for i, seed in enumerate(SEEDS):
            record = {"format": 1, "rung": rung, "seed": seed, "step": 100,
                      "recipe": {"config": "configs/toy.py", "overrides": {}},
                      "config": {"dataset": {"name": "toy"}, "model": {"backbone": "tiny"}, "seed": seed},
                      "metrics": {split: {k: v[i] for k, v in values.items()} for split, values in splits.items()},
                      "software": {"version": "0.1.0", "commit": None, "dirty": None}}
            with open(tmp_path / "toy" / rung / f"seed{seed}.json", "w", encoding="utf-8") as f:
                json.dump(record, f)
    return str(tmp_path)


def _values(rung: str, split: str, key: str) -> np.ndarray:
    return np.array(METRICS[rung][split][key])


def _error(rung: str, split: str, out: str) -> np.ndarray:
    return 100.0 * (1.0 - _values(rung, split, f"{out}_top1"))


def _summary(values: np.ndarray) -> str:
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _holm_pair(p: list[float]) -> list[float]:
    """Holm's adjusted p of a family of two, by hand: the smaller doubled, the larger at least that."""
    low = min(1.0, 2 * min(p))
    return [low if q == min(p) else max(low, q) for q in p]


def _test_rows(prefix: list[str], pairs: list[tuple[np.ndarray, np.ndarray]], digits: int) -> list[str]:
    tests = [scipy.stats.ttest_ind(a, b, equal_var=False) for a, b in pairs]
    holm = _holm_pair([t.pvalue for t in tests])
    rows = []
    for cells, (a, b), t, q in zip(prefix, pairs, tests, holm):
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        rows.append(f"| {cells} | {a.mean() - b.mean():+.{digits}f} ± {se:.{digits}f} | {t.statistic:.2f} | "
                    f"{t.df:.1f} | {_p(t.pvalue)} | {_p(q)} | {'yes' if q < 0.05 else 'no'} |")
    return rows


def expected_rows() -> set[str]:
    """Every table row the study gives, each number computed here from METRICS with numpy and scipy."""
    rows = {
        f"| gap | n/a | {_summary(_error('gap', 'test', 'gap'))} | n/a | {_summary(_error('gap', 'val', 'gap'))} |",
        f"| {RUNG} | " + " | ".join(_summary(_error(RUNG, split, out)) for split in ("test", "val")
                                    for out in ("saol", "gap")) + " |",
    }
    base = _error("gap", "test", "gap")
    rows.update(_test_rows([f"{RUNG} | SAOL output", f"{RUNG} | GAP-FC output"],
                           [(_error(RUNG, "test", "saol"), base), (_error(RUNG, "test", "gap"), base)], digits=2))
    for split in ("test", "val"):
        for rung, kinds in (("gap", ["cam"]), (RUNG, ["attention", "cam"])):
            for kind in kinds:
                rows.add(f"| {rung} | {kind} | " + " | ".join(
                    _summary(_values(rung, split, f"loc_{kind}_{score}")) for score in ("maxboxacc_v2", "maxboxacc_50"))
                    + " |")
    for score, title in (("maxboxacc_v2", "MaxBoxAccV2"), ("maxboxacc_50", "GT-known loc (MaxBoxAcc@0.5)")):
        base = _values("gap", "test", f"loc_cam_{score}")
        rows.update(_test_rows([f"{RUNG} | {kind} | {title}" for kind in ("attention", "cam")],
                               [(_values(RUNG, "test", f"loc_{kind}_{score}"), base) for kind in ("attention", "cam")],
                               digits=3))
    return rows


def test_every_number_in_the_rendered_tables_equals_its_files(root, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(DOC, encoding="utf-8")
    doc.write_text(report.update(doc.read_text(encoding="utf-8"), root), encoding="utf-8")
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# A document\n\nSome text.\n\n<!-- results: toy -->\n")
    assert text.endswith("<!-- /results -->\n\nMore text.\n") and "stale" not in text
    rows = {line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| rung |")}
    assert rows == expected_rows()
    # The one choice is made on the validation split, and its test figure reported as such.
    assert (f"Chosen on the validation split: {RUNG}, the lowest mean validation top-1 error of the SAOL output "
            f"({_summary(_error(RUNG, 'val', 'saol'))}); its test top-1 error, computed once for it: "
            f"{_summary(_error(RUNG, 'test', 'saol'))}.") in text
    assert "| rung | map | MaxBoxAccV2, val | GT-known loc (MaxBoxAcc@0.5), val |" in text
    assert "Warning" not in text  # 5 seeds a side
    assert report.update(text, root) == text  # rendering again changes nothing
    assert report.mismatches(text, root, "doc.md") == []


def test_check_fails_on_an_edited_number(root, tmp_path):
    doc = tmp_path / "doc.md"
    text = report.update(DOC.replace("<!-- results: toy -->", "<!-- results: toy error,versus -->"), root)
    doc.write_text(text, encoding="utf-8")
    assert "Localisation" not in text and "| gap | n/a |" in text
    assert report.mismatches(text, root, str(doc)) == []
    old = _summary(_error("gap", "test", "gap"))
    edited = text.replace(f"| gap | n/a | {old} |", f"| gap | n/a | {old.replace(old[:5], '22.00', 1)} |")
    assert edited != text
    doc.write_text(edited, encoding="utf-8")
    proc = run_command("studies.report", ["--check", str(doc), "--root", root], timeout=120)
    assert proc.returncode == 1
    problems = [line for line in proc.stderr.splitlines() if line.startswith(str(doc))]
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("| gap | n/a |"))) + 1
    assert "Traceback" not in proc.stderr
    assert len(problems) == 1 and problems[0].startswith(f"{doc}:{line}: results toy: expected '| gap | n/a | {old}")


def test_user_mistakes_are_report_errors(root):
    with pytest.raises(report.ReportError, match="no closing"):
        report.update("<!-- results: toy -->\nno end\n", root)
    with pytest.raises(report.ReportError, match="unknown sections"):
        report.render(os.path.join(root, "toy"), ["error", "nope"])
    with pytest.raises(report.ReportError, match="no run files"):
        report.update(DOC.replace("toy", "missing"), root)
    with open(os.path.join(root, "toy", "gap", "seed0.json"), "w", encoding="utf-8") as f:
        f.write('{"rung": "gap"')
    with pytest.raises(report.ReportError, match="seed0.json is not JSON"):
        report.render(os.path.join(root, "toy"))


def test_result_files_are_deterministic(tmp_path):
    record = {"rung": "gap", "seed": 3, "metrics": {"test": {"b": float("nan"), "a": np.float32(0.5)}}}
    path = results.write_run(str(tmp_path), record)
    assert path == os.path.join(str(tmp_path), "gap", "seed3.json")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text == results.dumps({"format": 1, **record})
    assert json.loads(text) == {"format": 1, "rung": "gap", "seed": 3, "metrics": {"test": {"a": 0.5, "b": None}}}
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert results.split_metrics({"eval/x": 1.0, "val/x": 2.0, "train/y": 3.0}) == {
        "test": {"x": 1.0}, "val": {"x": 2.0}}


def test_a_run_keeps_the_software_that_trained_it(tmp_path, monkeypatch):
    trained = {"version": "0.1.0", "commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(results, "software", lambda: trained)
    run_dir = str(tmp_path / "work" / "saol" / "seed0")
    assert results.training_software(run_dir) == trained
    # Collected again after the code moved on: the record of the training stays.
    monkeypatch.setattr(results, "software", lambda: {**trained, "commit": "b" * 40})
    assert results.training_software(run_dir) == trained
    # A run trained before workdirs kept the record: its earlier result file has it.
    earlier = results.write_run(str(tmp_path / "results"), {"rung": "gap", "seed": 1, "software": trained})
    assert results.training_software(str(tmp_path / "work" / "gap" / "seed1"), earlier) == trained
    # Without either, the software of the day is the one about to train.
    assert results.training_software(str(tmp_path / "work" / "gap" / "seed2"))["commit"] == "b" * 40


def test_every_marked_table_of_the_readme_equals_its_result_files():
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    text = open(readme, encoding="utf-8").read()
    root = os.path.join(os.path.dirname(readme), "results")
    assert report.OPEN.search(text), "README.md has no table rendered from result files"
    assert report.mismatches(text, root, "README.md") == []


def test_a_baselines_report_renders_its_numbers(tmp_path):
    scores = {"box_acc": {"0.3": 0.5, "0.5": 0.25, "0.7": 0.125}, "box_acc_v2": 0.875 / 3}
    swept = {"box_acc_at_tuned": {"0.3": 0.4, "0.5": 0.2, "0.7": 0.1}, "box_acc_v2_at_tuned": 0.7 / 3,
             "max_box_acc": {"0.3": 0.9, "0.5": 0.9, "0.7": 0.9}, "pointing": 0.33, "mass_ratio": 1.5}
    payload = {"dataset": "toy", "split": "test", "tune_split": "validation", "count": 8, "chance_top1": 0.2,
               "raw_image": swept, "intensity_map": swept, "centred_box": scores, "random_item": scores}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    table = report.render(str(path))
    # Swept baselines show the accuracy at the thresholds chosen on the tuning split, not the split's best.
    assert "| raw image, largest bright component | 0.400 | 0.200 | 0.100 | 0.233 | 0.33 | 1.50 |" in table
    assert "| centred box of mean size | 0.500 | 0.250 | 0.125 | 0.292 | n/a | n/a |" in table
    assert "0.900" not in table
