"""The jitted train and eval steps (the Flax functional training loop).

The model lives as `(graphdef, params, batch_stats)`: the steps are plain
`jax.jit` functions that merge them inside, so no `nnx.jit` bookkeeping runs
per step. Everything about one step happens on device: uint8 -> float
normalisation, CutMix with per-location maps, forward, every loss term,
gradients (accumulated over micro-batches with `grad_accum_steps` > 1) and
the optimiser update.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from saol_jax.core import cutmix as cutmix_lib
from saol_jax.core import cutmix_eval, localisation, losses, paste_targets
from saol_jax.core.sharding import DATA_AXIS, replicated
from saol_jax.models import DTYPES
from saol_jax.models.inputs import normalise

if TYPE_CHECKING:  # the accelerator image runs this module without ml_collections
    import ml_collections


class TrainState(struct.PyTreeNode):
    """Everything a resumed run needs besides the config (the data position is `step`)."""

    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of the train step, read from the config once.

    Fields that mirror a config field have no default in StepConfig: the config's
    value (saol_jax.core.recipe.base_config) is the only one.
    """

    loss_weights: Mapping[str, float]
    ss2_form: str | None  # loss.ss2_form (losses.SS2_FORMS; None: no SS-2); PASTED_TARGET_FORMS add a forward pass
    mean: Sequence[float]
    std: Sequence[float]
    grid_hw: tuple[int, int]
    cutmix_beta: float
    cutmix_prob: float
    cutmix_group_size: int
    eval_cutmix_maps: bool
    dtype: jnp.dtype  # model.dtype
    grad_accum_steps: int  # micro-batches per optimiser step (see make_train_step)
    paste_clean_fraction: float  # loss.paste_clean_fraction (saol_jax.core.paste_targets)
    paste_clean_scale: int  # loss.paste_clean_scale (saol_jax.core.paste_targets)
    eval_group_size: int = 0  # CutMix partners for the CutMix-map eval: per-device eval batch (0: whole batch)
    grad_accum_unroll: bool | None = None  # micro-batches unrolled (True) or a loop; None: unrolled on CPU only


def step_config(
    config: ml_collections.ConfigDict, grid_hw: Sequence[int], num_devices: int, *, training: bool = True
) -> StepConfig:
    """The step settings of a run's `config` on `num_devices` devices.

    `training=False` (tools that only evaluate a trained run) leaves the loss
    weights and CutMix off, so the config's training fields are not needed.
    """
    common = dict(
        mean=tuple(config.dataset.mean),
        std=tuple(config.dataset.std),
        grid_hw=tuple(grid_hw),
        eval_group_size=config.eval_batch_size // num_devices,
        eval_cutmix_maps=bool(config.get("eval_cutmix_maps", False)),
        dtype=DTYPES[config.model.dtype],
    )
    if not training:
        return StepConfig(loss_weights={}, ss2_form=None, cutmix_beta=0.0, cutmix_prob=0.0, cutmix_group_size=0,
                          grad_accum_steps=1, paste_clean_fraction=1.0, paste_clean_scale=1, **common)
    micro_per_device = config.batch_size // (num_devices * config.grad_accum_steps)
    return StepConfig(
        loss_weights=losses.loss_weights(config.loss),
        ss2_form=config.loss.ss2_form,
        cutmix_beta=config.cutmix.beta,
        cutmix_prob=config.cutmix.prob,
        cutmix_group_size=config.cutmix.group_size or micro_per_device,
        grad_accum_steps=config.grad_accum_steps,
        paste_clean_fraction=float(config.loss.paste_clean_fraction),
        paste_clean_scale=int(config.loss.paste_clean_scale),
        **common,
    )


# Eval images are CutMix'ed with this fixed key so every evaluation measures
# the CutMix maps on the same boxes and partners.
EVAL_CUTMIX_SEED = 1234


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    """Splits a freshly built model into its graph and a step-0 TrainState."""
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
    )
    return graphdef, state


def output_grid(graphdef: nnx.GraphDef, state: TrainState, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """H_o x W_o of the last backbone stage for `image_shape` inputs (traced, not run)."""

    def last_stage(params, batch_stats, images):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        return model.backbone(images)[-1]

    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    shape = jax.eval_shape(last_stage, state.params, state.batch_stats, images).shape
    return shape[1], shape[2]


def _accuracy_metrics(prefix: str, scores: jax.Array, labels: jax.Array, weight: jax.Array) -> dict[str, jax.Array]:
    return {
        f"{prefix}_top1": jnp.sum(losses.topk_correct(scores, labels, 1) * weight),
        f"{prefix}_top5": jnp.sum(losses.topk_correct(scores, labels, min(5, scores.shape[-1])) * weight),
    }


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    settings: StepConfig,
    mesh: Mesh,
) -> Callable[[TrainState, Mapping[str, jax.Array], jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns `train_step(state, batch, key) -> (state, metrics)`, jitted, state donated.

    `batch` holds uint8 `image` [B, H, W, C] and int32 `label` [B], sharded
    on the mesh's data axis; `key` is the run's base PRNG key, folded with the
    step so that a resumed run draws the same randomness. With SS-2 in a
    form of `losses.PASTED_TARGET_FORMS` the step first runs the model on
    the un-mixed batch (BN in train mode, its statistics discarded, no
    gradient) for the target; `settings.paste_clean_fraction` and
    `settings.paste_clean_scale` make that pass cheaper (saol_jax.core.paste_targets).

    Gradient accumulation (`settings.grad_accum_steps` = k > 1): one call is still
    one optimiser step on the global batch B (the schedule, `state.step`, the
    data position and the logged metrics count optimiser steps), but the
    forward and backward passes run over k micro-batches of B / k in a
    `lax.scan`, and the update uses the mean of their gradients. Each device
    keeps its rows: micro-batch i is the i-th slice of every device's share.
    CutMix is drawn once on the whole batch, with the same key whatever k,
    its partners in groups of `cutmix_group_size` that must lie within one
    device's micro-batch (the trainer's default); each micro-batch gets its
    own dropout key. BatchNorm, as in most frameworks: statistics per
    micro-batch, running statistics updated after each micro-batch (k
    updates per step). Every loss term is a mean per micro-batch, averaged
    over the k, so the gradient equals the large batch's where BN statistics
    agree (no BN, eval mode, or ghost BN of the per-device micro-batch),
    except SS-2 ``renorm`` with CutMix, which divides by the valid regions of
    each micro-batch. Metrics: loss terms averaged over micro-batches,
    accuracies over the whole batch, `grad_norm` of the averaged gradient.
    The micro-batches run as a loop, which keeps one micro-batch's
    activations live, except on CPU (`settings.grad_accum_unroll`): XLA:CPU runs
    the loop's body about 12x slower than the same work unrolled
    (`benchmarks/grad_accum.py`), and host memory is seldom the limit there.
    """
    paste = settings.ss2_form in losses.PASTED_TARGET_FORMS and settings.loss_weights.get("ss2", 0.0) != 0.0
    accum = settings.grad_accum_steps
    devices = mesh.devices.size
    unroll = settings.grad_accum_unroll
    if unroll is None:
        unroll = mesh.devices.flat[0].platform == "cpu"
    micro_sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))

    def split_micro(x: jax.Array) -> jax.Array:
        """[B, ...] -> [k, B / k, ...]: micro-batch i takes the i-th slice of each device's rows."""
        per_device = x.shape[0] // devices
        x = x.reshape(devices, accum, per_device // accum, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x.reshape(accum, -1, *x.shape[3:]), micro_sharding)

    def micro_partner(partner: jax.Array) -> jax.Array:
        """Batch indices of CutMix partners -> their indices within the micro-batch (same group)."""
        per_device = partner.shape[0] // devices
        return (partner // per_device) * (per_device // accum) + partner % (per_device // accum)

    def clean_responsibility(params: nnx.State, batch_stats: nnx.State, images: jax.Array, labels: jax.Array,
                             key: jax.Array) -> jax.Array:
        """[n, Ho, Wo] log R of the un-mixed `images` [n, H, W, C] (at 1 / paste_clean_scale resolution)."""
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        clean = model(paste_targets.downsample(images, settings.paste_clean_scale), rngs=nnx.Rngs(dropout=key))
        log_resp = losses.responsibility(clean["log_attention"], clean["log_spatial"], labels)
        return paste_targets.upsample_responsibility(log_resp, settings.grid_hw)

    def pasted_target(params: nnx.State, batch_stats: nnx.State, micro, key: jax.Array, rows: int):
        """SS-2 'paste' from the un-mixed pass: [b, Ho, Wo] log target when every example gets one
        (`rows` = the per-device batch), else [devices * 2 rows, Ho, Wo] log R of `clean_rows`."""
        if rows == micro["labels"].shape[0] // devices:
            log_resp = clean_responsibility(params, batch_stats, micro["clean"], micro["labels"], key)
            return losses.cut_and_paste(log_resp, log_resp[micro["partner"]], micro["coverage"])
        pick = functools.partial(paste_targets.clean_rows, partner=micro["partner"], rows=rows, devices=devices)
        return clean_responsibility(params, batch_stats, pick(micro["clean"]), pick(micro["labels"]), key)

    def micro_step(params: nnx.State, carry, xs):
        """Gradient, loss terms and correct counts of one micro-batch; BN statistics carried."""
        grad_sum, batch_stats = carry
        micro, model_key = xs
        per_device = micro["labels"].shape[0] // devices
        rows = paste_targets.clean_rows_per_device(settings.paste_clean_fraction, per_device) if paste else 0
        clean = pasted_target(params, batch_stats, micro, jax.random.fold_in(model_key, 1), rows) if rows else None

        def loss_fn(params):
            model = nnx.merge(graphdef, params, batch_stats, copy=True)
            outputs = model(micro["images"], rngs=nnx.Rngs(dropout=model_key))
            ss2_target = clean
            if paste and rows < per_device:
                ss2_target = paste_targets.mixed_target(
                    outputs["log_attention"], outputs["log_spatial"], micro["labels"], micro["partner_labels"],
                    micro["coverage"])
                if rows:
                    ss2_target = paste_targets.fraction_target(clean, micro["coverage"], ss2_target, rows, devices)
            terms = losses.loss_terms(
                outputs, micro["labels"], micro["partner_labels"], micro["lam"], micro["coverage"],
                settings.loss_weights, ss2_form=settings.ss2_form, ss2_target=ss2_target,
            )
            return terms["total"], (terms, outputs, nnx.state(model, nnx.BatchStat))

        grads, (terms, outputs, batch_stats) = jax.grad(loss_fn, has_aux=True)(params)
        ones = jnp.ones(micro["labels"].shape, jnp.float32)
        correct = {}
        for head, scores in _head_scores(outputs).items():
            correct.update(_accuracy_metrics(head, scores, micro["labels"], ones))
        return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), (terms, correct)

    def train_step(state: TrainState, batch: Mapping[str, jax.Array], key: jax.Array):
        mix_key, model_key = jax.random.split(jax.random.fold_in(key, state.step))
        # One micro-batch keeps the step's key: without accumulation a step draws as it always did.
        model_keys = jax.random.split(model_key, accum) if accum > 1 else model_key[None]
        images = normalise(batch["image"], settings.mean, settings.std, settings.dtype)
        labels = batch["label"]
        mixed = cutmix_lib.cutmix(
            mix_key,
            images,
            grid_hw=settings.grid_hw,
            beta=settings.cutmix_beta,
            prob=settings.cutmix_prob,
            group_size=settings.cutmix_group_size,
        )
        micro = {
            "images": mixed.images, "labels": labels, "partner_labels": labels[mixed.partner],
            "lam": mixed.lam, "coverage": mixed.coverage,
        }
        if paste:
            micro.update(clean=images, partner=micro_partner(mixed.partner))
        zeros = jax.tree.map(jnp.zeros_like, state.params)
        if accum == 1:
            # No scan and no reshape: the batch keeps its sharding, so XLA partitions the step as before.
            (grad_sum, batch_stats), (terms, correct) = micro_step(
                state.params, (zeros, state.batch_stats), (micro, model_keys[0]))
        else:
            (grad_sum, batch_stats), (terms, correct) = jax.lax.scan(
                functools.partial(micro_step, state.params),
                (zeros, state.batch_stats),
                (jax.tree.map(split_micro, micro), model_keys),
                unroll=unroll,
            )
        grads = jax.tree.map(lambda g: g / accum, grad_sum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        metrics = {f"loss/{name}": jnp.mean(value) for name, value in terms.items()}
        metrics.update({f"train/{name}": jnp.sum(value) / labels.shape[0] for name, value in correct.items()})
        metrics["train/lr"] = schedule(state.step)
        metrics["train/grad_norm"] = optax.global_norm(grads)
        return new_state, metrics

    rep = replicated(mesh)
    return jax.jit(train_step, donate_argnums=0, out_shardings=(rep, rep))


def _head_scores(outputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Scores used for accuracy: SAOL's log y_hat when present, GAP-FC's logits always."""
    scores = {"gap": outputs["gap_logits"]}
    if "log_probs" in outputs:
        scores["saol"] = outputs["log_probs"]
    return scores


def make_eval_step(
    graphdef: nnx.GraphDef, settings: StepConfig, mesh: Mesh
) -> Callable[[nnx.State, nnx.State, Mapping[str, jax.Array]], dict[str, jax.Array]]:
    """Returns `eval_step(params, batch_stats, batch) -> sums`, jitted.

    `graphdef` must come from the model in eval mode (running BN statistics,
    no dropout). `batch` adds a bool `mask` [B] for padding; the result holds
    masked sums (top-1/top-5 correct and cross-entropy of each head, and the
    example `count`) for the caller to accumulate and divide. When the batch
    has true boxes (`bbox` [B, 4], normalised) it also holds
    `localisation.box_scores` of every map (the caller passes the result
    through `localisation.iou_sums`). With `eval_cutmix_maps` and a SAOL
    head it holds the sums of `cutmix_eval.cutmix_sums` on CutMix'ed copies
    of the images.
    """

    def eval_step(params: nnx.State, batch_stats: nnx.State, batch: Mapping[str, jax.Array]):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        images = normalise(batch["image"], settings.mean, settings.std, settings.dtype)
        outputs = model(images, with_cam="bbox" in batch)
        labels = batch["label"]
        weight = batch["mask"].astype(jnp.float32)
        sums = {"count": jnp.sum(weight)}
        for head, scores in _head_scores(outputs).items():
            log_probs = jax.nn.log_softmax(scores) if head == "gap" else scores
            nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
            sums[f"{head}_loss"] = jnp.sum(nll * weight)
            sums.update(_accuracy_metrics(head, scores, labels, weight))
        if "bbox" in batch:
            sums.update(localisation.box_scores(outputs, labels, batch["bbox"], batch["mask"], images.shape[1:3]))
        if settings.eval_cutmix_maps and "log_attention" in outputs:
            sums.update(cutmix_map_sums(model, images, labels, batch["mask"]))
        return sums

    def cutmix_map_sums(model, images, labels, mask):
        """SAOL's maps on eval images CutMix'ed with a fixed key (see saol_jax.core.cutmix_eval)."""
        mixed = cutmix_lib.cutmix(
            jax.random.key(EVAL_CUTMIX_SEED), images, grid_hw=settings.grid_hw, beta=1.0, prob=1.0,
            group_size=settings.eval_group_size or None,
        )
        outputs = model(mixed.images)
        return cutmix_eval.cutmix_sums(
            outputs["log_attention"], outputs["log_spatial"], labels, labels[mixed.partner],
            mixed.coverage, mask & mask[mixed.partner],
        )

    return jax.jit(eval_step, out_shardings=replicated(mesh))
