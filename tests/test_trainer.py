"""End-to-end training on a tiny tfds dataset: metrics, sharding equivalence, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import time

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from commands import smoke_args, start_command
from configs import fashion_mnist
from saol_jax.core import checkpoint, losses, optim, run_identity, sharding
from saol_jax.core.config_check import ConfigError
from saol_jax.core.train_step import StepConfig, create_train_state, make_train_step, step_config
from saol_jax.core.trainer import NonFiniteLossError, train_and_evaluate
from saol_jax.models import build_model

LOSS_TERMS = ("saol_ce", "ss1", "ss2", "sd", "gap_ce", "total")


def tiny_config(dataset: dict, **overrides) -> ml_collections.ConfigDict:
    """The default recipe's smoke variant pointed at the tiny test dataset."""
    config = fashion_mnist.get_config("smoke")
    config.dataset.name = dataset["name"]
    config.dataset.data_dir = dataset["data_dir"]
    config.num_cpu_devices = 0
    config.update_from_flattened_dict(overrides)
    return config


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def final_params(workdir: str, dataset: dict) -> dict:
    """Parameters of the newest checkpoint in `workdir`, as a flat dict of numpy arrays."""
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        raw = checkpointer.restore_raw(checkpointer.steps()[-1])
    finally:
        checkpointer.close()
    return flat_arrays(raw["params"])


def flat_arrays(tree) -> dict[tuple[str, ...], np.ndarray]:
    """{path without 'value' wrappers: array} for raw checkpoint dicts and nnx States alike."""
    flat = {}
    for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        flat[tuple(n for n in names if n != "value")] = np.asarray(value)
    return flat


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """4 steps on the recipe's carve (86 train, 10 validation), evaluated every 2 steps (0.4 of 5 an epoch)."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(tiny_dataset, eval_batch_size=16, eval_every_epochs=0.4)
    results = train_and_evaluate(config, workdir)
    return workdir, results


def test_end_to_end_writes_metrics_tensorboard_and_config(trained):
    workdir, results = trained
    events = read_metrics(workdir)
    train_events = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [2, 4]
    for event in train_events:
        for term in LOSS_TERMS:
            assert np.isfinite(event[f"loss/{term}"]), term
        assert event["train/img_per_s"] > 0
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["dataset"]["name"] == "tiny_shapes"
    for head in ("saol", "gap"):
        for metric in ("top1", "top5", "loss"):
            assert np.isfinite(results[f"eval/{head}_{metric}"])
    assert [e["step"] for e in events if e["event"] == "eval"] == [4]
    # SAOL's maps on CutMix'ed eval images: fractions in [0, 1]. The dataset has no boxes,
    # so there is no true-box localisation.
    for name in ("partner_iou", "att_mass_in_box", "box_area_share"):
        assert 0.0 <= results[f"eval/cutmix_{name}"] <= 1.0, name
    assert results["eval/cutmix_att_box_concentration"] > 0.0
    assert not [name for name in results if name.startswith("eval/loc_")]


def test_validation_is_evaluated_periodically_and_test_once_at_the_end(trained):
    workdir, results = trained
    evaluations = [(e["event"], e["step"], e["split"]) for e in read_metrics(workdir) if e["event"] != "train"]
    assert evaluations == [("val", 2, "train[90%:]"), ("val", 4, "train[90%:]"), ("eval", 4, "test")]
    final_val = [e for e in read_metrics(workdir) if e["event"] == "val"][-1]
    assert final_val["val/count"] == results["val/count"] == 10
    assert {k for k in final_val if k.startswith("val/")} == {f"val/{k[len('eval/'):]}" for k in results
                                                              if k.startswith("eval/")}
    assert final_val["val/saol_top1"] == results["val/saol_top1"]


def test_without_a_validation_split_the_eval_split_is_evaluated_periodically(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, eval_every_epochs=0.5, **{"dataset.train_split": "train",
                                                                 "dataset.validation_split": None})
    results = train_and_evaluate(config, str(tmp_path))  # 6 steps an epoch: evaluations at steps 3 and 4
    evaluations = [(e["event"], e["step"], e["split"]) for e in read_metrics(str(tmp_path)) if e["event"] != "train"]
    assert evaluations == [("eval", 3, "test"), ("eval", 4, "test")]
    assert not [name for name in results if not name.startswith("eval/")] and results["eval/count"] == 30


def test_a_validation_split_inside_the_train_split_is_refused(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, **{"dataset.validation_split": "train[80:]"})
    with pytest.raises(ConfigError, match=r"validation split 'train\[80:\]' of tiny_shapes shares 6 examples"):
        train_and_evaluate(config, str(tmp_path))


def test_the_train_carve_is_part_of_a_runs_identity_and_the_validation_split_is_not(tiny_dataset):
    fields = run_identity.identity(tiny_config(tiny_dataset), num_devices=8, num_processes=1)
    assert fields["dataset.train_split"] == "train[:90%]" and "dataset.validation_split" not in fields


def test_eval_counts_every_example_once_with_padding(trained):
    # 30 test examples in batches of 16: the second batch is padded with 2 masked slots.
    _, results = trained
    assert results["eval/count"] == 30
    assert 0.0 <= results["eval/saol_top1"] <= results["eval/saol_top5"] <= 1.0


def test_checkpoints_are_kept_and_resume_is_a_noop_when_finished(trained, tiny_dataset):
    workdir, results = trained
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    assert checkpointer.steps() == [2, 4]
    checkpointer.close()
    # Re-running a finished run restores step 4, trains nothing more and returns the final evaluation.
    again = train_and_evaluate(tiny_config(tiny_dataset, eval_batch_size=16), workdir)
    assert again == results
    assert [e["step"] for e in read_metrics(workdir) if e["event"] == "train"] == [2, 4]


def test_step_config_reads_the_training_and_the_eval_only_settings(tiny_dataset):
    config = tiny_config(tiny_dataset, batch_size=32, eval_batch_size=24, grad_accum_steps=2)
    config.cutmix.group_size = 0  # 0: CutMix partners within each device's micro-batch
    config.loss.ss2_form = "paste"
    training = step_config(config, (3, 3), num_devices=4)
    assert training.cutmix_group_size == 32 // (4 * 2)
    assert (training.grad_accum_steps, training.ss2_form, training.grid_hw) == (2, "paste", (3, 3))
    assert training.loss_weights == losses.loss_weights(config.loss) and training.loss_weights
    assert training.eval_group_size == 24 // 4
    evaluation_only = step_config(config, (3, 3), num_devices=4, training=False)
    assert evaluation_only.loss_weights == {} and evaluation_only.cutmix_prob == 0.0
    assert (evaluation_only.eval_group_size, evaluation_only.mean) == (6, training.mean)


def _one_step(num_devices: int, config: ml_collections.ConfigDict, batch: dict):
    mesh = sharding.make_mesh(num_devices)
    model = build_model(config.model, num_classes=4, in_channels=3, rngs=nnx.Rngs(0))
    schedule = optim.learning_rate_schedule(config.optim, global_batch_size=16, steps_per_epoch=6, total_steps=4)
    tx = optim.sgd(config.optim, schedule)
    graphdef, state = create_train_state(model, tx)
    state = jax.device_put(state, sharding.replicated(mesh))
    step_config = StepConfig(
        loss_weights=losses.loss_weights(config.loss), ss2_form="renorm", mean=(0.5,), std=(0.25,), grid_hw=(3, 3),
        cutmix_beta=1.0, cutmix_prob=1.0, cutmix_group_size=2, eval_cutmix_maps=False, dtype=jax.numpy.float32,
        grad_accum_steps=1, paste_clean_fraction=1.0, paste_clean_scale=1,
    )
    train_step = make_train_step(graphdef, tx, schedule, step_config, mesh)
    key = jax.random.key(3)
    for _ in range(2):
        state, metrics = train_step(state, sharding.global_batch(batch, mesh), key)
    return jax.device_get(metrics), jax.device_get(state.params)


def test_eight_devices_match_one_device(tiny_dataset):
    config = tiny_config(tiny_dataset)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (16, 12, 12, 3), dtype=np.uint8),
        "label": rng.integers(0, 4, (16,), dtype=np.int32),
    }
    metrics_1, params_1 = _one_step(1, config, batch)
    metrics_8, params_8 = _one_step(8, config, batch)
    for term in LOSS_TERMS:
        np.testing.assert_allclose(metrics_8[f"loss/{term}"], metrics_1[f"loss/{term}"], rtol=2e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_8, params_1)


def diverge(monkeypatch) -> None:
    """Makes every update NaN, as a diverging run's: a NaN learning rate (which the config check refuses)."""
    monkeypatch.setattr(optim, "learning_rate_schedule", lambda *args, **kwargs: lambda step: float("nan"))


def test_non_finite_loss_stops_with_a_clear_message(tiny_dataset, tmp_path, monkeypatch):
    diverge(monkeypatch)
    config = tiny_config(tiny_dataset)
    with pytest.raises(NonFiniteLossError, match="non-finite loss/"):
        train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "2"))


def test_init_from_loads_weights_only(trained, tiny_dataset, tmp_path):
    source, _ = trained
    config = tiny_config(tiny_dataset, init_from=source, num_train_steps=0)
    model = build_model(config.model, num_classes=4, in_channels=3, rngs=nnx.Rngs(1))
    params = nnx.state(model, nnx.Param)
    loaded, _ = checkpoint.load_weights(
        os.path.join(source, "checkpoints"), params, nnx.state(model, nnx.BatchStat)
    )
    expected = final_params(source, tiny_dataset)
    got = flat_arrays(loaded)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    other = fashion_mnist.get_config("smoke").model
    other.backbone_kwargs.widths = (8, 16, 64)
    wrong = build_model(other, num_classes=4, in_channels=3, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="shape"):
        checkpoint.load_weights(
            os.path.join(source, "checkpoints"), nnx.state(wrong, nnx.Param), nnx.state(wrong, nnx.BatchStat)
        )


# ----------------------------------------------------------------- command line


def test_kill_and_resume_matches_uninterrupted_run(tiny_dataset, tmp_path):
    steps = ["--config.num_train_steps=12", "--config.checkpoint_every_steps=3", "--config.log_every_steps=3"]
    reference = str(tmp_path / "reference")
    proc = start_command("train", smoke_args(tiny_dataset, reference, *steps))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    resumed = str(tmp_path / "resumed")
    proc = start_command("train", smoke_args(tiny_dataset, resumed, *steps))
    checkpoints = os.path.join(resumed, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.isdir(checkpoints) and "6" in os.listdir(checkpoints)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    completed = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
    assert completed and completed[-1] < 12, f"the run was not interrupted: {completed}"

    proc = start_command("train", smoke_args(tiny_dataset, resumed, *steps))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resumed from checkpoint" in out
    want, got = final_params(reference, tiny_dataset), final_params(resumed, tiny_dataset)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_saves_then_exits(tiny_dataset, tmp_path, signum):
    workdir = str(tmp_path / "preempted")
    # The child inherits an ignored SIGHUP or SIGINT (pytest under nohup or in a background job), which
    # the trainer rightly leaves ignored; start it with the default dispositions, as from a terminal.
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    inherited_int = signal.signal(signal.SIGINT, signal.SIG_DFL) if signum == signal.SIGINT else None
    try:
        proc = start_command("train", smoke_args(
            tiny_dataset, workdir, "--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000",
            "--config.log_every_steps=1",
        ))
    finally:
        signal.signal(signal.SIGHUP, inherited)
        if inherited_int is not None:
            signal.signal(signal.SIGINT, inherited_int)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        time.sleep(0.05)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"{signum.name} received" in out and "pre-empted at step" in out
    assert out.strip().splitlines()[-1].startswith("pre-empted at step")  # one closing line, no traceback
    assert "Traceback" not in out
    saved = [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
    assert len(saved) == 1 and 0 < int(saved[0]) < 100000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config.optim.lrr=0.1"], "lrr"),
        (["--config.dataset.name=no_such_dataset_xyz"], "no_such_dataset_xyz"),
        (["--config.dataset.data_dir=/nonexistent/tfds"], "/nonexistent/tfds"),
    ],
    ids=["misspelt-field", "unknown-dataset", "missing-data-dir"],
)
def test_bad_input_fails_fast_with_a_message(extra, message, tmp_path):
    args = [
        "--config", "configs/fashion_mnist.py:smoke", "--workdir", str(tmp_path / "w"),
        "--config.num_cpu_devices=0", *extra,
    ]
    proc = start_command("train", args)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert message in out
    assert "Traceback" not in out
