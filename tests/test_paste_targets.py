"""Tests for saol_jax.core.paste_targets: the cheaper `paste` targets reduce to `paste` where they should."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saol_jax.core import losses as L
from saol_jax.core import paste_targets as P

DEVICES, PER_DEVICE, GRID, K = 2, 4, (4, 4), 3
B = DEVICES * PER_DEVICE


def _maps(seed: int, batch: int = B, grid=GRID):
    """Random log attention [batch, *grid] and log spatial maps [batch, *grid, K]."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    log_a = jax.nn.log_softmax(jax.random.normal(k1, (batch, grid[0] * grid[1]))).reshape(batch, *grid)
    return log_a, jax.nn.log_softmax(jax.random.normal(k2, (batch, *grid, K)), axis=-1)


def _batch():
    """Labels, partners within each device's share (a permutation per device) and box coverage."""
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, K, B))
    partner = jnp.asarray(np.concatenate([d * PER_DEVICE + rng.permutation(PER_DEVICE) for d in range(DEVICES)]))
    coverage = np.zeros((B, *GRID), np.float32)
    coverage[:, 1:3, 0:2] = 1.0
    coverage[:, 3, 0:2] = 0.5
    coverage[1] = 0.0  # one un-mixed example
    return labels, partner, jnp.asarray(coverage)


@pytest.mark.parametrize("fraction, rows", [(0.0, 0), (0.25, 1), (0.5, 2), (1.0, 4), (0.3, 1)])
def test_clean_rows_per_device(fraction, rows):
    assert P.clean_rows_per_device(fraction, PER_DEVICE) == rows


def test_clean_rows_are_each_devices_first_examples_then_their_partners():
    labels, partner, _ = _batch()
    x = jnp.arange(B)
    got = np.asarray(P.clean_rows(x, partner, 2, DEVICES)).reshape(DEVICES, 2, 2)
    for d in range(DEVICES):
        own = [d * PER_DEVICE, d * PER_DEVICE + 1]
        np.testing.assert_array_equal(got[d, 0], own)
        np.testing.assert_array_equal(got[d, 1], np.asarray(partner)[own])
    assert P.clean_rows(jnp.zeros((B, 5, 5, 1)), partner, 3, DEVICES).shape == (DEVICES * 6, 5, 5, 1)


def test_full_fraction_is_paste():
    # With every example among the clean rows, the spliced target is exactly `paste`'s: the gathered
    # partners' responsibilities are those `pasted_attention_target` indexes by partner.
    labels, partner, coverage = _batch()
    log_a, log_y = _maps(1)
    pick = lambda x: P.clean_rows(x, partner, PER_DEVICE, DEVICES)  # noqa: E731
    # A row-wise model: the clean pass's maps of the gathered rows are the gathered maps.
    clean_resp = L.responsibility(pick(log_a), pick(log_y), pick(labels))
    unrelated = jnp.zeros((B, *GRID))
    got = P.fraction_target(clean_resp, coverage, unrelated, PER_DEVICE, DEVICES)
    expected = L.pasted_attention_target(log_a, log_y, labels, partner, coverage)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_partial_fraction_splices_paste_into_the_mixed_target():
    labels, partner, coverage = _batch()
    log_a, log_y = _maps(2)
    pick = lambda x: P.clean_rows(x, partner, 1, DEVICES)  # noqa: E731
    clean_resp = L.responsibility(pick(log_a), pick(log_y), pick(labels))
    mixed = P.mixed_target(*_maps(3), labels, labels[partner], coverage)
    got = np.asarray(P.fraction_target(clean_resp, coverage, mixed, 1, DEVICES))
    paste = np.asarray(L.pasted_attention_target(log_a, log_y, labels, partner, coverage))
    first = np.arange(B) % PER_DEVICE == 0
    np.testing.assert_allclose(got[first], paste[first], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[~first], np.asarray(mixed)[~first])
    np.testing.assert_allclose(np.exp(got).sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_mixed_target_is_paste_on_unmixed_examples_and_on_a_whole_pasted_image():
    labels, partner, coverage = _batch()
    log_a, log_y = _maps(4)
    paste = L.pasted_attention_target(log_a, log_y, labels, partner, coverage)
    mixed = P.mixed_target(log_a, log_y, labels, labels[partner], coverage)
    # Example 1 has no box: its mixed image is its un-mixed image, so the targets agree.
    np.testing.assert_allclose(mixed[1], paste[1], rtol=1e-6, atol=1e-6)
    # A box over the whole image: the mixed image is the partner's, whose maps the mixed forward then sees.
    full = jnp.ones((B, *GRID))
    partner_view = (log_a[partner], log_y[partner])
    np.testing.assert_allclose(P.mixed_target(*partner_view, labels, labels[partner], full),
                               L.pasted_attention_target(log_a, log_y, labels, partner, full), rtol=1e-6, atol=1e-6)
    # On a mixed example the target differs: its region split comes from the mixed image.
    assert not np.allclose(mixed[0], paste[0])


def test_mixed_target_has_no_gradient():
    labels, partner, coverage = _batch()
    log_a, log_y = _maps(5)
    grad = jax.grad(lambda a: jnp.sum(P.mixed_target(a, log_y, labels, labels[partner], coverage)))(log_a)
    np.testing.assert_array_equal(grad, 0.0)


def test_downsample_averages_blocks_and_keeps_scale_one():
    images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    assert P.downsample(images, 1) is images
    small = P.downsample(images, 2)
    assert small.shape == (2, 2, 2, 1)
    np.testing.assert_allclose(small[0, 0, 0, 0], np.mean([0, 1, 4, 5]))
    np.testing.assert_allclose(small[1, 1, 1, 0], np.mean([26, 27, 30, 31]))


def test_upsample_responsibility_is_a_distribution_on_the_output_grid():
    log_a, log_y = _maps(6, grid=(2, 2))
    labels = jnp.zeros(B, int)
    low = L.responsibility(log_a, log_y, labels)
    assert P.upsample_responsibility(low, (2, 2)) is low  # same grid: unchanged
    up = np.exp(np.asarray(P.upsample_responsibility(low, GRID)))
    assert up.shape == (B, *GRID)
    np.testing.assert_allclose(up.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert (up >= 0).all()
    # A constant map stays constant.
    flat = jnp.log(jnp.full((1, 2, 2), 0.25))
    np.testing.assert_allclose(np.exp(P.upsample_responsibility(flat, GRID)), 1 / 16, rtol=1e-5)
    # The mass stays where it was: the corner with most responsibility keeps most of it.
    corner = jnp.log(jnp.array([[[0.7, 0.1], [0.1, 0.1]]]))
    big = np.exp(np.asarray(P.upsample_responsibility(corner, GRID)))[0]
    assert big[:2, :2].sum() > 0.5 > big[2:, 2:].sum()
