"""A resumed run is the same run or a clear refusal; no checkpoint is lost, damaged ones are skipped,
a checkpoint is never written with NaN weights, and the logs describe what the checkpoints hold."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing import event_accumulator

from saol_jax import data
from saol_jax.core import checkpoint, faults, trainer
from saol_jax.core.metrics import MetricWriter, read_events
from saol_jax.core import recipe, run_identity
from saol_jax.core.ladder import apply_head
from saol_jax.core.run_identity import RunChangedError
from saol_jax.core.trainer import NonFiniteLossError, train_and_evaluate
from test_trainer import diverge, final_params, flat_arrays, tiny_config


@pytest.fixture(scope="module")
def finished(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), workdir)
    return workdir


def _snapshot(workdir: str) -> dict[str, bytes]:
    """Every file of the workdir but the logs (TensorBoard's, train.log), by relative path."""
    files = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            if "tensorboard" not in path and name != faults.LOG_FILE:
                files[os.path.relpath(path, workdir)] = open(path, "rb").read()
    return files


@pytest.mark.parametrize("overrides, field", [
    ({"model.saol.att_width": 16}, "model.saol.att_width"),
    ({"batch_size": 32}, "batch_size"),
    ({"seed": 7}, "seed"),
    ({"model.head": "gap", "loss.saol": 0.0}, "model.head"),
], ids=["width", "batch-size", "seed", "head"])
def test_changed_run_is_refused_and_leaves_the_workdir_untouched(finished, tiny_dataset, overrides, field):
    before = _snapshot(finished)
    with pytest.raises(RunChangedError, match=rf"{field}.*new --workdir.*init_from") as error:
        train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16, **overrides), finished)
    assert "\n" not in str(error.value)
    assert _snapshot(finished) == before


@pytest.mark.parametrize("head, refused", [("gap", False), ("saol", False), ("saol_ss_sd", True)])
def test_the_ss2_form_defines_only_runs_that_train_ss2(tmp_path, head, refused):
    # A run recorded with one SS-2 form, resumed under a recipe whose default form changed.
    config = recipe.base_config()
    apply_head(config, head)
    config.loss.update({"ss2_form": "paste", "paste_clean_fraction": 0.5})
    run_identity.record(str(tmp_path), run_identity.identity(config, num_devices=1, num_processes=1))
    config.loss.update({"ss2_form": "renorm", "paste_clean_fraction": 1.0})
    current = run_identity.identity(config, num_devices=1, num_processes=1)
    if refused:
        with pytest.raises(RunChangedError, match="loss.paste_clean_fraction: 0.5 -> 1.0, loss.ss2_form"):
            run_identity.check_same_run(str(tmp_path), current)
    else:
        run_identity.check_same_run(str(tmp_path), current)


def test_observation_fields_may_change_on_resume(finished, tiny_dataset):
    results = train_and_evaluate(
        tiny_config(tiny_dataset, eval_batch_size=8, log_every_steps=1, keep_checkpoints=5), finished)
    assert results["eval/count"] == 30


def test_nan_update_is_never_saved(tiny_dataset, tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    diverge(monkeypatch)
    config = tiny_config(tiny_dataset, checkpoint_every_steps=1, log_every_steps=4)
    with pytest.raises(NonFiniteLossError, match=r"non-finite parameters after step 1, so it was not saved; "
                                                 r"no checkpoint was saved"):
        train_and_evaluate(config, workdir)
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        for step in checkpointer.steps():
            for name, value in flat_arrays(checkpointer.restore_raw(step)["params"]).items():
                assert np.all(np.isfinite(value)), (step, name)
    finally:
        checkpointer.close()


def test_a_finished_run_can_be_extended(finished, tiny_dataset, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    results = train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16, num_train_steps=6), workdir)
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        assert checkpointer.steps()[-1] == 6
    finally:
        checkpointer.close()
    assert results["eval/count"] == 30


# ------------------------------------------------------------------ damaged or unreadable checkpoints


def _largest_file(folder: str) -> str:
    files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return max(files, key=os.path.getsize)


def _truncate_largest_file(step_dir: str) -> None:
    path = _largest_file(step_dir)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _leave_as_temporary_folder(step_dir: str) -> None:
    """What a kill -9 during orbax's write leaves: the step's folder under its temporary name."""
    os.rename(step_dir, f"{step_dir}.orbax-checkpoint-tmp-1795000000")


@pytest.mark.parametrize("damage", [_truncate_largest_file, _leave_as_temporary_folder],
                         ids=["truncated", "temporary-folder"])
def test_damaged_newest_checkpoint_resumes_from_the_one_before(finished, tiny_dataset, tmp_path, damage):
    want = final_params(finished, tiny_dataset)
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    damage(os.path.join(workdir, "checkpoints", "4"))

    results = train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), workdir)

    steps = [e["step"] for e in read_events(workdir) if e["event"] == "train"]
    assert steps == [2, 4]  # step 4 was trained again, once in the log
    assert results["eval/count"] == 30
    names = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    assert not any("tmp" in name for name in names), names
    if damage is _truncate_largest_file:
        assert "4.damaged" in names  # kept for inspection, out of orbax's way
    got = final_params(workdir, tiny_dataset)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=str(name))


def test_unreadable_checkpoint_stops_the_run_and_changes_nothing(finished, tiny_dataset, monkeypatch):
    def failing_read(self, step, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing_read)
    before = _snapshot(finished)
    with pytest.raises(checkpoint.CheckpointRestoreError,
                       match=r"could not read checkpoint 4 .*Input/output error.*Nothing was changed") as error:
        train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), finished)
    assert "\n" not in str(error.value)
    assert _snapshot(finished) == before


def test_failing_final_evaluation_keeps_the_final_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    def broken_eval(self, step):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(trainer._Run, "evaluate", broken_eval)
    workdir = str(tmp_path / "w")
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train_and_evaluate(tiny_config(tiny_dataset), workdir)
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        assert checkpointer.steps()[-1] == 4
    finally:
        checkpointer.close()


# ------------------------------------------------------------------ labels outside the model's classes


def _relabelled(batches, label: int):
    def wrapped(*args, **kwargs):
        for batch in batches(*args, **kwargs):
            batch["label"] = batch["label"].copy()
            batch["label"][0] = label
            yield batch
    return wrapped


@pytest.mark.parametrize("split, source, label", [
    ("training", "host_train_batches", 4),
    ("training", "host_train_batches", -1),
    ("evaluation", "host_eval_batches", 7),
])
def test_labels_outside_the_classes_stop_the_run_in_one_line(tiny_dataset, tmp_path, monkeypatch,
                                                             split, source, label):
    monkeypatch.setattr(data, source, _relabelled(getattr(data, source), label))
    message = rf"the {split} data has a batch with label {label}, outside \[0, 4\)"
    with pytest.raises(data.DatasetFormatError, match=message) as error:
        train_and_evaluate(tiny_config(tiny_dataset), str(tmp_path / "w"))
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------ logs after a resume


def _tensorboard_points(logdir: str, tag: str) -> list[tuple[int, float]]:
    accumulator = event_accumulator.EventAccumulator(logdir, purge_orphaned_data=True)
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def test_logs_after_a_resume_hold_only_the_restored_history(tmp_path):
    workdir = str(tmp_path)
    first = MetricWriter(workdir, enabled=True)
    for step in range(1, 7):  # an attempt that logged up to step 6, then died after saving step 4
        first.write("train", step, {"loss/total": float(step)})
    first.close()
    with open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"event": "train", "step": 7, "loss/to')  # a line cut off by the crash

    resumed = MetricWriter(workdir, start_step=4, enabled=True)
    for step in (5, 6):
        resumed.write("train", step, {"loss/total": 10.0 * step})
    resumed.close()

    want = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]
    assert [(e["step"], e["loss/total"]) for e in read_events(workdir)] == want
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        assert all(json.loads(line) for line in f)  # the cut-off line is gone
    assert _tensorboard_points(os.path.join(workdir, "tensorboard"), "loss/total") == want
