"""SAOL vs GAP-FC comparison: the metrics on hand-made inputs, and the command on a smoke-trained run."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from commands import run_command
from saol_jax.commands import compare_heads
from saol_jax.core import paths
from saol_jax.core.metrics import read_events
from saol_jax.core.trainer import train_and_evaluate
from test_trainer import tiny_config


def one_hot_confidence(confidence: list[float], num_classes: int = 3) -> np.ndarray:
    """probs [N, K] predicting class 0 with the given confidences, the rest spread over the others."""
    confidence = np.asarray(confidence)[:, None]
    rest = (1.0 - confidence) / (num_classes - 1)
    return np.concatenate([confidence, np.repeat(rest, num_classes - 1, axis=1)], axis=1)


def test_ece_is_zero_when_every_bin_is_calibrated():
    # Confidence 0.8 with 4 of 5 right, confidence 0.5 with 1 of 2 right.
    probs = one_hot_confidence([0.8] * 5 + [0.5] * 2)
    labels = np.array([0, 0, 0, 0, 1, 0, 2])
    assert compare_heads.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_the_gap_of_an_overconfident_bin_weighted_by_its_share():
    overconfident = one_hot_confidence([0.9] * 4)
    assert compare_heads.expected_calibration_error(overconfident, np.array([0, 0, 1, 2])) == pytest.approx(0.4)
    # Half the examples in that bin, half in a calibrated one: 0.5 * 0.4.
    probs = np.concatenate([overconfident, one_hot_confidence([0.5] * 4)])
    labels = np.array([0, 0, 1, 2, 0, 0, 1, 1])
    assert compare_heads.expected_calibration_error(probs, labels) == pytest.approx(0.2)


def test_ece_matches_a_loop_over_half_open_bins():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs[:3] = np.eye(5)[:3]  # confidence exactly 1 falls in the last bin
    labels = rng.integers(0, 5, 500)
    confidence, correct = probs.max(-1), probs.argmax(-1) == labels
    expected = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    assert compare_heads.expected_calibration_error(probs, labels, bins=15) == pytest.approx(expected)


def test_per_class_error_counts_by_true_label():
    errors = compare_heads.per_class_error(np.array([0, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 2]), 4)
    np.testing.assert_allclose(errors[:3], [0.5, 0.5, 1.0])
    assert np.isnan(errors[3])  # no example of class 3


def test_disagreement_fractions():
    labels = np.array([0, 1, 0, 0, 2, 1])
    # They differ at 1 (first right), 3 (second right) and 4 (neither).
    result = compare_heads.disagreement(np.array([0, 1, 2, 3, 0, 1]), np.array([0, 2, 2, 0, 1, 1]), labels,
                                        names=("saol", "gap"))
    assert result == pytest.approx({"rate": 0.5, "count": 3, "saol_right": 1 / 3, "gap_right": 1 / 3,
                                    "neither": 1 / 3})
    same = compare_heads.disagreement(labels, labels, labels)
    assert same["rate"] == same["count"] == 0 and np.isnan(same["a_right"])


def test_mean_nll():
    log_probs = np.log(np.array([[0.5, 0.5], [0.25, 0.75]]))
    assert compare_heads.mean_nll(log_probs, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)


def test_attention_cells_count_the_cells_an_attention_map_spreads_over():
    uniform = jnp.full((1, 4, 4), -jnp.log(16.0))
    one_cell = jnp.log(jnp.zeros((1, 4, 4)).at[0, 1, 2].set(1.0))  # -inf elsewhere
    halves = jnp.log(jnp.zeros((1, 4, 4)).at[0, 0, :2].set(0.5))
    cells = compare_heads.attention_cells(jnp.concatenate([uniform, one_cell, halves]))
    np.testing.assert_allclose(np.asarray(cells), [16.0, 1.0, 2.0], rtol=1e-6)


def test_attention_spread_averages_per_true_class():
    spread = compare_heads.attention_spread(np.array([2.0, 4.0, 9.0]), np.array([0, 0, 2]), ["a", "b", "c"])
    assert spread["mean"] == pytest.approx(5.0)
    assert spread["per_class"]["a"] == 3.0 and spread["per_class"]["c"] == 9.0
    assert np.isnan(spread["per_class"]["b"])


def test_a_gap_only_model_is_refused_before_anything_is_loaded(tmp_path):
    paths.write_json(str(tmp_path / "config.json"), {"model": {"head": "gap"}})
    with pytest.raises(compare_heads.NoSaolHeadError, match=r"no SAOL head \(model.head == 'gap'\)"):
        compare_heads.compare(str(tmp_path))


# ----------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def workdir(tiny_dataset, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("compare_heads_run"))
    train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), path)
    return path


def test_cli_errors_match_the_trainers_final_eval(workdir):
    proc = run_command("commands.compare_heads", ["--workdir", workdir], timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "top-1 error" in proc.stdout and "disagree on" in proc.stdout
    with open(os.path.join(workdir, "compare_heads.json"), encoding="utf-8") as f:
        report = json.load(f)
    final = [event for event in read_events(workdir) if event["event"] == "eval"][-1]
    assert report["count"] == final["eval/count"] == 30
    assert sum(report["class_counts"].values()) == 30
    for head in compare_heads.HEADS:
        assert report[head]["top1_error"] == pytest.approx(1.0 - final[f"eval/{head}_top1"], abs=1e-6)
        assert report[head]["nll"] == pytest.approx(final[f"eval/{head}_loss"], rel=1e-4)
        assert set(report[head]["per_class_error"]) == set(report["class_counts"])
        assert 0.0 <= report[head]["ece"] <= 1.0 and 0.0 < report[head]["mean_confidence"] <= 1.0
    cells = report["attention_cells"]
    grid = 3 * 3  # the tiny model's output grid
    assert 1.0 <= cells["mean"] <= grid
    assert set(cells["per_class"]) == set(report["class_counts"])
    dis = report["disagreement"]
    assert 0 <= dis["count"] <= 30
    if dis["count"]:
        assert dis["saol_right"] + dis["gap_right"] + dis["neither"] == pytest.approx(1.0)
