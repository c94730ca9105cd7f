"""The sweep table: per backbone, the setting with the lowest validation error is chosen; test is never read."""

from __future__ import annotations

import json
import os

import pytest

from saol_jax.studies import report, sweep

# setting -> (backbone, overrides, {seed: (validation top-1, test top-1)}); the test accuracies rank the
# settings the other way round, so a table that read them would choose differently.
SETTINGS = {
    "vit-sgd": ("vit_mini_patch4", {"optim.lr": 0.05}, {0: (0.25, 0.90), 1: (0.27, 0.91)}),
    "vit-adamw": ("vit_mini_patch4", {"optim.optimizer": "adamw", "optim.lr": 0.001},
                  {0: (0.70, 0.30), 1: (0.74, 0.31)}),
    "convnext-adamw": ("convnext_mini", {"optim.optimizer": "adamw"}, {0: (0.60, 0.50)}),
}
DEFAULT_OPTIM = {"optimizer": "sgd", "lr": 0.1}  # the toy recipe's, where a setting keeps it


def _config(backbone: str, overrides: dict, seed: int) -> dict:
    """A run's config: the toy recipe's optimiser with the setting's overrides."""
    optim = {**DEFAULT_OPTIM, **{key.split(".")[1]: value for key, value in overrides.items()}}
    return {"dataset": {"name": "toy"}, "model": {"backbone": backbone}, "optim": optim, "seed": seed}


@pytest.fixture
def sweep_root(tmp_path):
    """A results root holding the sweep `tuning`: a GAP-FC study per setting, written by hand."""
    for setting, (backbone, overrides, seeds) in SETTINGS.items():
        os.makedirs(tmp_path / "tuning" / setting / "gap")
        for seed, (val, test) in seeds.items():
            record = {"format": 1, "rung": "gap", "seed": seed, "step": 100,
                      "recipe": {"config": "configs/toy.py", "overrides": overrides},
                      "config": _config(backbone, overrides, seed),
                      "metrics": {"val": {"gap_top1": val}, "test": {"gap_top1": test}},
                      "software": {"version": "0.1.0", "commit": None, "dirty": None}}
            with open(tmp_path / "tuning" / setting / "gap" / f"seed{seed}.json", "w", encoding="utf-8") as f:
                json.dump(record, f)
    return str(tmp_path)


def test_the_lowest_validation_error_is_chosen_per_backbone(sweep_root):
    rows = sweep.settings(os.path.join(sweep_root, "tuning"))
    assert [row["setting"] for row in rows] == ["convnext-adamw", "vit-adamw", "vit-sgd"]
    by_setting = {row["setting"]: row for row in rows}
    assert by_setting["vit-adamw"]["val_top1_error"]["gap"]["mean"] == pytest.approx(28.0)
    assert by_setting["vit-sgd"]["seeds"] == 2
    assert sweep.chosen(rows) == {"vit_mini_patch4": "vit-adamw", "convnext_mini": "convnext-adamw"}


def test_the_rendered_table_marks_the_choice_and_states_every_swept_field(sweep_root):
    """Each row gives its runs' value of every field its backbone's settings overrode, read from the run's
    config: vit-sgd kept the recipe's optimiser, and the table says which that was."""
    text = report.render(os.path.join(sweep_root, "tuning"), ["sweep"])
    rows = [line for line in text.splitlines() if line.startswith("| vit_mini_patch4")]
    assert rows == [
        "| vit_mini_patch4 | vit-adamw | `optim.lr=0.001`, `optim.optimizer=adamw` | gap | 2 | 28.00 ± 2.83 | yes |",
        "| vit_mini_patch4 | vit-sgd | `optim.lr=0.05`, `optim.optimizer=sgd` | gap | 2 | 74.00 ± 1.41 |  |",
    ]
    assert "| convnext_mini | convnext-adamw | `optim.optimizer=adamw` | gap | 1 | 40.00 | yes |" in text
    assert "90" not in text  # no test figure


def test_sweep_mistakes_are_report_errors(sweep_root, tmp_path):
    with pytest.raises(report.ReportError, match="a region of its own"):
        report.render(os.path.join(sweep_root, "tuning"), ["sweep", "error"])
    with pytest.raises(report.ReportError, match="no studies"):
        report.render(str(tmp_path / "empty"), ["sweep"])
    os.makedirs(tmp_path / "tuning" / "vit-sgd" / "saol")
    with open(tmp_path / "tuning" / "vit-sgd" / "gap" / "seed0.json", encoding="utf-8") as f:
        record = json.load(f)
    with open(tmp_path / "tuning" / "vit-sgd" / "saol" / "seed0.json", "w", encoding="utf-8") as f:
        json.dump({**record, "rung": "saol"}, f)
    with pytest.raises(report.ReportError, match="a sweep setting has one rung"):
        report.render(os.path.join(sweep_root, "tuning"), ["sweep"])


def test_a_field_a_run_lacks_is_none_and_other_backbones_fields_are_not_listed():
    rows = [{"backbone": "a", "overrides": {"model.scale": 1.0}, "config": {"model": {"scale": 1.0}}},
            {"backbone": "a", "overrides": {}, "config": {"model": {}}},  # from before the field existed
            {"backbone": "b", "overrides": {"optim.lr": 0.1}, "config": {"optim": {"lr": 0.1}}}]
    assert sweep.swept_values(rows) == [{"model.scale": 1.0}, {"model.scale": None}, {"optim.lr": 0.1}]
