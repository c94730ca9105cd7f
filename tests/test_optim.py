"""The optimisers `optim.optimizer` names: SGD as PyTorch's, AdamW with decay on kernels only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from saol_jax.core import optim, recipe


def _optim(**fields):
    config = recipe.base_config().optim
    config.update(fields)
    return config


def _params():
    return {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)},
            "norm": {"scale": jnp.full((3,), 2.0)}, "pos_embed": jnp.full((1, 4, 3), 2.0)}


def _one_step(tx, params, grads):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    return optax.apply_updates(params, updates)


def test_adamw_decays_kernels_and_embeddings_but_not_vectors():
    """With zero gradients Adam's own step is zero, so what moves is the decay alone: lr * wd * value."""
    params = _params()
    zeros = optax.tree_utils.tree_zeros_like(params)
    tx = optim.optimizer(_optim(optimizer="adamw", weight_decay=0.1), optax.constant_schedule(0.5))
    new = _one_step(tx, params, zeros)
    np.testing.assert_allclose(new["dense"]["kernel"], 2.0 - 0.5 * 0.1 * 2.0)
    np.testing.assert_allclose(new["pos_embed"], 2.0 - 0.5 * 0.1 * 2.0)
    np.testing.assert_allclose(new["dense"]["bias"], 2.0)
    np.testing.assert_allclose(new["norm"]["scale"], 2.0)


def test_adamw_step_is_optax_adamw_with_the_config_betas():
    params = _params()
    grads = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)},
             "norm": {"scale": -jnp.ones(3)}, "pos_embed": jnp.ones((1, 4, 3))}
    config = _optim(optimizer="adamw", weight_decay=0.0, momentum=0.8, b2=0.95)
    ours = _one_step(optim.optimizer(config, optax.constant_schedule(1e-2)), params, grads)
    reference = _one_step(optax.adamw(1e-2, b1=0.8, b2=0.95, weight_decay=0.0), params, grads)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_sgd_is_the_default_and_decays_every_parameter():
    """PyTorch's coupled decay: the gradient gains wd * value on every leaf, vectors included."""
    config = _optim(momentum=0.0, nesterov=False, weight_decay=0.1)
    assert config.optimizer == "sgd"
    params = _params()
    new = _one_step(optim.optimizer(config, optax.constant_schedule(0.5)), params,
                    optax.tree_utils.tree_zeros_like(params))
    for leaf in jax.tree.leaves(new):
        np.testing.assert_allclose(leaf, 2.0 - 0.5 * 0.1 * 2.0)


def test_unknown_optimizer_names_the_choices():
    with pytest.raises(ValueError, match="optim.optimizer must be one of"):
        optim.optimizer(_optim(optimizer="adam"), optax.constant_schedule(0.1))
