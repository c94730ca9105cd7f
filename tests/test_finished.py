"""saol_jax.studies.finished: which seeds of a stopped study every rung has finished."""

import json

from saol_jax.studies import finished


def make_run(root, rung, seed, *, last_eval_epoch=None, num_train_steps=None, eval_step=None):
    run_dir = root / rung / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"num_epochs": 4.0, "num_train_steps": num_train_steps}))
    events = [{"event": "train", "step": 10, "epoch": 1.0}]
    if last_eval_epoch is not None:
        events.append({"event": "eval", "step": eval_step or 40, "epoch": last_eval_epoch})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_counts_the_seeds_every_rung_finished(tmp_path):
    for seed in range(3):
        make_run(tmp_path, "gap", seed, last_eval_epoch=4.0)
    make_run(tmp_path, "saol", 0, last_eval_epoch=4.0)
    make_run(tmp_path, "saol", 1, last_eval_epoch=2.0)  # an evaluation mid-run: not finished
    make_run(tmp_path, "saol", 2, last_eval_epoch=4.0)
    (tmp_path / "saol" / "seed1.log").write_text("a parallel run's console output\n")
    assert finished.finished_seeds(str(tmp_path)) == 1


def test_an_unfinished_first_seed_counts_zero(tmp_path):
    make_run(tmp_path, "gap", 0)
    make_run(tmp_path, "gap", 1, last_eval_epoch=4.0)
    assert finished.finished_seeds(str(tmp_path)) == 0
    assert finished.finished_seeds(str(tmp_path / "missing")) == 0


def test_a_step_budget_decides_over_epochs(tmp_path):
    make_run(tmp_path, "gap", 0, last_eval_epoch=0.5, num_train_steps=40, eval_step=40)
    make_run(tmp_path, "gap", 1, last_eval_epoch=0.4, num_train_steps=40, eval_step=32)
    assert finished.is_finished(str(tmp_path / "gap" / "seed0"))
    assert not finished.is_finished(str(tmp_path / "gap" / "seed1"))
    assert finished.finished_seeds(str(tmp_path)) == 1
