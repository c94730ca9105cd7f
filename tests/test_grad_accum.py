"""Gradient accumulation (`grad_accum_steps`): k micro-batches make the large batch's update.

    nice -n 19 .venv/bin/python -m pytest -q tests/test_grad_accum.py

The model has BatchNorm (every backbone does), so the two runs use ghost BN
over the per-device micro-batch: the large batch then normalises the same
groups of examples that the micro-batches do, and only the accumulation
differs.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from saol_jax.core import losses, optim, sharding
from saol_jax.core.train_step import StepConfig, create_train_state, make_train_step
from saol_jax.core.trainer import train_and_evaluate
from saol_jax.models import build_model
from test_trainer import LOSS_TERMS, read_metrics, tiny_config

BATCH, DEVICES, ACCUM = 32, 8, 2
MICRO_PER_DEVICE = BATCH // (DEVICES * ACCUM)


def _two_steps(config, accum: int, batches: list[dict], unroll: bool | None = None) -> tuple[dict, dict]:
    """Metrics of the second step and the parameters after two steps on 8 devices."""
    mesh = sharding.make_mesh(DEVICES)
    model = build_model(config.model, num_classes=4, in_channels=3, rngs=nnx.Rngs(0))
    schedule = optim.learning_rate_schedule(config.optim, global_batch_size=BATCH, steps_per_epoch=3, total_steps=4)
    tx = optim.sgd(config.optim, schedule)
    graphdef, state = create_train_state(model, tx)
    state = jax.device_put(state, sharding.replicated(mesh))
    step_config = StepConfig(
        loss_weights=losses.loss_weights(config.loss), ss2_form=config.loss.ss2_form, mean=(0.5,), std=(0.25,),
        grid_hw=(3, 3), cutmix_beta=1.0, cutmix_prob=config.cutmix.prob, cutmix_group_size=MICRO_PER_DEVICE,
        eval_cutmix_maps=False, dtype=jax.numpy.float32, grad_accum_steps=accum, grad_accum_unroll=unroll,
        paste_clean_fraction=config.loss.paste_clean_fraction, paste_clean_scale=config.loss.paste_clean_scale,
    )
    train_step = make_train_step(graphdef, tx, schedule, step_config, mesh)
    for batch in batches:
        state, metrics = train_step(state, sharding.global_batch(batch, mesh), jax.random.key(3))
    assert int(state.step) == len(batches)
    return jax.device_get(metrics), jax.device_get(state.params)


@pytest.mark.parametrize("ss2_form, cutmix_prob, unroll", [
    ("renorm", 0.0, None), ("paste", 1.0, None), ("paste", 1.0, False),
], ids=["renorm-no-cutmix", "paste-cutmix", "paste-cutmix-loop"])
def test_accumulated_micro_batches_give_the_large_batch_update(tiny_dataset, ss2_form, cutmix_prob, unroll):
    # unroll=None unrolls on CPU; False runs the loop accelerators use.
    # 'paste' with CutMix on also checks that partners are found within each micro-batch.
    config = tiny_config(tiny_dataset, **{
        "model.ghost_bn_size": MICRO_PER_DEVICE, "cutmix.prob": cutmix_prob, "loss.ss2_form": ss2_form,
    })
    rng = np.random.default_rng(0)
    batches = [{
        "image": rng.integers(0, 256, (BATCH, 12, 12, 3), dtype=np.uint8),
        "label": rng.integers(0, 4, (BATCH,), dtype=np.int32),
    } for _ in range(2)]
    metrics_1, params_1 = _two_steps(config, 1, batches)
    metrics_k, params_k = _two_steps(config, ACCUM, batches, unroll)
    for name in [f"loss/{term}" for term in LOSS_TERMS] + ["train/saol_top1", "train/lr", "train/grad_norm"]:
        np.testing.assert_allclose(metrics_k[name], metrics_1[name], rtol=1e-5, atol=1e-6, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params_k, params_1)


def test_trainer_runs_with_accumulation(tiny_dataset, tmp_path):
    results = train_and_evaluate(tiny_config(tiny_dataset, grad_accum_steps=2), str(tmp_path))
    train = [e for e in read_metrics(str(tmp_path)) if e["event"] == "train"]
    assert [e["step"] for e in train] == [2, 4]
    assert all(np.isfinite(e["loss/total"]) for e in train)
    assert np.isfinite(results["eval/saol_top1"])
