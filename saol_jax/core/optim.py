"""Learning-rate schedules and the optimisers of the recipes: SGD (docs/method.md §9) and AdamW."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import optax

if TYPE_CHECKING:  # configs are ConfigDicts; only attribute access is used
    import ml_collections

# The learning-rate schedules `optim.schedule` names (see `learning_rate_schedule`).
SCHEDULES = ("step", "cosine", "constant")
# The optimisers `optim.optimizer` names (see `optimizer`).
OPTIMIZERS = ("sgd", "adamw")


def scaled_learning_rate(optim: ml_collections.ConfigDict, global_batch_size: int) -> float:
    """Linear scaling rule: lr * batch / base_batch when `base_batch_size` > 0."""
    if optim.base_batch_size > 0:
        return optim.lr * global_batch_size / optim.base_batch_size
    return optim.lr


def learning_rate_schedule(
    optim: ml_collections.ConfigDict, *, global_batch_size: int, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Linear warm-up, then a step ('step') or cosine ('cosine') decay.

    Step boundaries (`decay_epochs`) are given in epochs and multiply the
    learning rate by `decay_factor` each.
    """
    peak = scaled_learning_rate(optim, global_batch_size)
    warmup = int(round(optim.warmup_epochs * steps_per_epoch))
    if optim.schedule == "step":
        boundaries = {
            int(round(epoch * steps_per_epoch)) - warmup: optim.decay_factor
            for epoch in optim.decay_epochs
        }
        decay = optax.piecewise_constant_schedule(peak, boundaries)
    elif optim.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
    elif optim.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {optim.schedule!r}")
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def sgd(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and coupled weight decay, as PyTorch's SGD."""
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay),
        optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov),
    )


def adamw(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """AdamW (β1 = `momentum`, β2 = `b2`) with decoupled weight decay on the matrices and kernels only.

    Vectors (biases, norm scales) and scalars are not decayed, the usual choice for
    transformers; position embeddings and class tokens (rank 3) are decayed as kernels.
    """
    def decayed(params):
        return jax.tree.map(lambda leaf: leaf.ndim >= 2, params)

    return optax.adamw(schedule, b1=optim.momentum, b2=optim.b2, weight_decay=optim.weight_decay, mask=decayed)


def optimizer(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimiser `optim.optimizer` names, following `schedule`."""
    if optim.optimizer == "sgd":
        return sgd(optim, schedule)
    if optim.optimizer == "adamw":
        return adamw(optim, schedule)
    raise ValueError(f"optim.optimizer must be one of {OPTIMIZERS}, got {optim.optimizer!r}")
