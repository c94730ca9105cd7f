"""Eval metrics of a model over padded eval batches: one implementation for the trainer and the tools.

`eval_metrics` runs an eval step (`saol_jax.core.train_step.make_eval_step`)
over batches, adds up its masked sums (with the host side of the box scores,
`saol_jax.core.localisation.iou_sums`, whose threshold sweeps are arrays) and
turns them into the `eval/*` figures that metrics.jsonl records (see
`saol_jax.core.metrics`). `eval_step_for` builds
that step for a restored model (`saol_jax.core.restore.RestoredModel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from saol_jax.core import cutmix_eval, localisation, sharding
from saol_jax.core.restore import RestoredModel
from saol_jax.core.train_step import make_eval_step, step_config

EvalStep = Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], dict[str, jax.Array]]


Totals = dict[str, "float | np.ndarray"]


def add_sums(totals: Mapping[str, Any], sums: Mapping[str, Any]) -> Totals:
    """`totals` plus one batch's host-side eval sums (`iou_sums` of an eval step's output):
    scalars stay floats, the threshold sweeps' arrays add element-wise."""
    result = dict(totals)
    for name, value in sums.items():
        value = np.asarray(value, np.float64)
        result[name] = result.get(name, 0.0) + (float(value) if value.ndim == 0 else value)
    return result


def metrics_from_sums(totals: Mapping[str, Any], thresholds: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Summed eval sums -> `eval/<name>` means over the counted examples, `eval/count`, the box
    scores of `localisation.sweep_summary` and the `eval/cutmix_*` figures of
    `cutmix_eval.cutmix_metrics` when the sums hold them.

    `thresholds` maps a localisation map to the [L] operating thresholds chosen
    on another split (`chosen_thresholds` of its summary); without, each map's
    box scores are at this split's own best thresholds.
    """
    totals = dict(totals)
    count = totals.pop("count", 0.0)
    located = {name: totals.pop(name) for name in cutmix_eval.SUM_KEYS if name in totals}
    swept = {name: totals.pop(name) for name in list(totals) if localisation.is_sweep_sum(name)}
    results = {f"eval/{name}": value / max(count, 1.0) for name, value in totals.items()}
    results.update({f"eval/{k}": v for k, v in localisation.sweep_summary(swept, count, thresholds).items()})
    results["eval/count"] = count
    if located:
        results.update({f"eval/cutmix_{k}": v for k, v in cutmix_eval.cutmix_metrics(located).items()})
    return results


def chosen_thresholds(results: Mapping[str, float], prefix: str = "eval") -> dict[str, np.ndarray]:
    """Each map's [L] operating thresholds in an eval summary (`<prefix>/loc_<map>_threshold_<level>`;
    `val` for the trainer's validation lines), to score another split at:
    `metrics_from_sums(test_totals, chosen_thresholds(validation_results))`."""
    levels = [localisation.level_name(level) for level in localisation.IOU_LEVELS]
    return {kind: np.array([results[f"{prefix}/loc_{kind}_threshold_{level}"] for level in levels])
            for kind in localisation.MAPS if f"{prefix}/loc_{kind}_maxboxacc_v2" in results}


def eval_metrics(
    eval_step: EvalStep,
    params: nnx.State,
    batch_stats: nnx.State,
    batches: Iterable[Mapping[str, jax.Array]],
    fetch: Callable[[Any], Any] = jax.device_get,
    thresholds: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Top-1/top-5 and loss of both heads (and box scores, CutMix-map figures when the step gives them).

    `batches` are the eval step's inputs (padded, with `mask`), already on
    the step's devices; `fetch` copies its replicated output to the host;
    `thresholds`: the box scores' operating thresholds chosen on another
    split (see `metrics_from_sums`).
    """
    totals: Totals = {}
    for batch in batches:
        totals = add_sums(totals, localisation.iou_sums(fetch(eval_step(params, batch_stats, batch))))
    return metrics_from_sums(totals, thresholds)


def eval_mesh(config, num_devices: int | None = None) -> Mesh:
    """The run's data mesh (`config.num_devices`, else every device), shrunk to the largest device
    count that divides `config.eval_batch_size` (another machine may have other devices)."""
    available = num_devices or config.get("num_devices") or jax.device_count()
    return sharding.make_mesh(math.gcd(min(available, jax.device_count()), config.eval_batch_size))


def eval_step_for(trained: RestoredModel, mesh: Mesh) -> EvalStep:
    """The trainer's eval step for `trained`'s model and config on `mesh` (training-only settings unused)."""
    config, shape = trained.config, trained.info.image_shape
    probe = jax.ShapeDtypeStruct((1, *shape), jax.numpy.uint8)
    grid_hw = jax.eval_shape(trained.apply, trained.params, trained.batch_stats, probe)["cam"].shape[1:3]
    settings = step_config(config, grid_hw, mesh.devices.size, training=False)
    return make_eval_step(trained.graphdef, settings, mesh)
