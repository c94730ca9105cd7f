"""Learning-rate schedules and the SGD optimiser of the recipes (docs/method.md §9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optax

if TYPE_CHECKING:  # configs are ConfigDicts; only attribute access is used
    import ml_collections

# The learning-rate schedules `optim.schedule` names (see `learning_rate_schedule`).
SCHEDULES = ("step", "cosine", "constant")


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
