"""A resumed run is the same run or a clear refusal; a checkpoint is never written with NaN weights."""

from __future__ import annotations

import os

import numpy as np
import pytest

from saol_jax import checkpoint
from saol_jax.run_identity import RunChangedError
from saol_jax.trainer import NonFiniteLossError, train_and_evaluate
from test_trainer import flat_arrays, tiny_config


@pytest.fixture(scope="module")
def finished(tiny_dataset, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), workdir)
    return workdir


def _snapshot(workdir: str) -> dict[str, bytes]:
    """Every file of the workdir but the TensorBoard logs, by relative path."""
    files = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            if "tensorboard" not in path:
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


def test_observation_fields_may_change_on_resume(finished, tiny_dataset):
    results = train_and_evaluate(
        tiny_config(tiny_dataset, eval_batch_size=8, log_every_steps=1, keep_checkpoints=5), finished)
    assert results["eval/count"] == 30


def test_nan_update_is_never_saved(tiny_dataset, tmp_path):
    workdir = str(tmp_path / "w")
    config = tiny_config(tiny_dataset, checkpoint_every_steps=1, log_every_steps=4)
    config.optim.lr = float("nan")
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


def test_a_finished_run_can_be_extended(finished, tiny_dataset):
    results = train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16, num_train_steps=6), finished)
    checkpointer = checkpoint.Checkpointer(os.path.join(finished, "checkpoints"), async_save=False)
    try:
        assert checkpointer.steps()[-1] == 6
    finally:
        checkpointer.close()
    assert results["eval/count"] == 30
