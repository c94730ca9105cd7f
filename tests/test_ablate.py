"""The ablation ladder on the tiny dataset: table, plot, JSON, skipping finished runs."""

from __future__ import annotations

import json
import os

import matplotlib.image
import pytest

from commands import run_command
from configs import fashion_mnist
from saol_jax import ablate

RUNGS = ("gap", "saol_ss_sd")


def smoke_config(dataset: dict):
    config = fashion_mnist.get_config("smoke")
    config.dataset.name = dataset["name"]
    config.dataset.data_dir = dataset["data_dir"]
    config.num_cpu_devices = 0
    return config


@pytest.fixture(scope="module")
def ladder(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ablation"))
    return workdir, ablate.run_ladder(smoke_config(tiny_dataset), workdir, seeds=2, rungs=RUNGS)


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
            assert all(0.0 <= e <= 100.0 for e in run["top1_error"].values())


def test_outputs_reported_per_rung(ladder):
    _, payload = ladder
    assert set(payload["rungs"]["gap"]["top1_error"]) == {"gap"}
    assert set(payload["rungs"]["saol_ss_sd"]["top1_error"]) == {"saol", "gap"}


def test_table_plot_and_json_are_written(ladder):
    workdir, payload = ladder
    with open(os.path.join(workdir, "ablation.md"), encoding="utf-8") as f:
        table = f.read()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "n/a" in rows["gap"].split("|")[2]  # no SAOL output on the GAP-FC baseline
    assert "±" in rows["saol_ss_sd"].split("|")[2] and "±" in rows["saol_ss_sd"].split("|")[3]
    with open(os.path.join(workdir, "ablation.json"), encoding="utf-8") as f:
        assert json.load(f) == payload
    image = matplotlib.image.imread(os.path.join(workdir, "ablation.png"))
    assert image.ndim == 3 and image.std() > 0


def test_rerun_skips_finished_runs(ladder, tiny_dataset):
    workdir, payload = ladder
    run_dir = payload["rungs"]["gap"]["runs"][0]["workdir"]
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        before = f.read()
    again = ablate.run_ladder(smoke_config(tiny_dataset), workdir, seeds=2, rungs=RUNGS)
    assert again == payload
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        assert f.read() == before


def test_summary_statistics():
    assert ablate.summarise([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5)}
    assert ablate._cell(ablate.summarise([5.0])) == "5.00"
    assert ablate._cell(None) == "n/a"


def test_cli_rejects_an_unknown_rung(tmp_path):
    proc = run_command(
        "ablate", ["--config", "configs/fashion_mnist.py:smoke", "--workdir", str(tmp_path), "--rungs", "gap,nope"],
        timeout=120,
    )
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "Traceback" not in proc.stderr
