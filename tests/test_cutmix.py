"""Tests for saol_jax.core.cutmix: boxes, lambda, pasting, partners, coverage, jit and sharding."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from saol_jax.core import cutmix as cm

# Jitted entry points (one compile per configuration keeps the tests fast on CPU).
_cutmix = jax.jit(cm.cutmix, static_argnames=("grid_hw", "beta", "prob", "group_size"))
_sample_boxes = jax.jit(cm.sample_boxes, static_argnums=(1, 2), static_argnames=("beta", "prob"))
_cell_coverage = jax.jit(cm.cell_coverage, static_argnums=(1, 2))
_group_permutation = jax.jit(cm.group_permutation, static_argnums=(1, 2))


def _images(batch, height, width, channels=3, seed=0):
    # Distinct values everywhere, so a wrong pixel source cannot go unnoticed.
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.permutation(batch * height * width * channels).reshape(batch, height, width, channels), jnp.float32)


def _brute_coverage(box, image_hw, grid_hw):
    """Coverage from a super-sampled full-resolution mask: each pixel split into s x s sub-pixels
    with s chosen so that every continuous cell edge i*H/Ho lies on a sub-pixel edge."""
    (height, width), (gh, gw) = image_hw, grid_hw
    sy = gh // math.gcd(height, gh)
    sx = gw // math.gcd(width, gw)
    y0, x0, y1, x1 = (int(v) for v in box)
    mask = np.zeros((height, width))
    mask[y0:y1, x0:x1] = 1.0
    fine = np.repeat(np.repeat(mask, sy, axis=0), sx, axis=1)
    return fine.reshape(gh, height * sy // gh, gw, width * sx // gw).mean(axis=(1, 3))


@pytest.mark.parametrize("image,grid", [(32, (8, 8)), (28, (3, 3)), (32, (5, 5))])
def test_mean_coverage_is_one_minus_lambda(image, grid):
    batch = _cutmix(jax.random.key(1), _images(64, image, image, 1), grid_hw=grid)
    cov = np.asarray(batch.coverage)
    assert cov.shape == (64, *grid)
    assert cov.min() >= 0.0 and cov.max() <= 1.0
    # Cells have equal continuous areas H*W/(Ho*Wo), so the cell mean is the box's area fraction
    # whether or not the grid divides the image.
    np.testing.assert_allclose(cov.mean(axis=(1, 2)), 1.0 - np.asarray(batch.lam), atol=1e-6)
    assert (np.asarray(batch.lam) < 1).sum() > 50  # boxes really were pasted


def test_boxes_within_bounds_and_lambda_matches_area():
    boxes, lam = _sample_boxes(jax.random.key(2), 4096, (24, 40), beta=1.0, prob=1.0)
    boxes, lam = np.asarray(boxes), np.asarray(lam)
    assert boxes.dtype == np.int32 and lam.dtype == np.float32
    y0, x0, y1, x1 = boxes.T
    assert np.all((0 <= y0) & (y0 <= y1) & (y1 <= 24))
    assert np.all((0 <= x0) & (x0 <= x1) & (x1 <= 40))
    np.testing.assert_allclose(lam, 1.0 - (y1 - y0) * (x1 - x0) / (24 * 40), atol=1e-6)
    # Boxes reach every image edge (clipping happens; the side itself is < H unless lam0 == 0).
    assert y0.min() == 0 and y1.max() == 24 and x0.min() == 0 and x1.max() == 40


def test_pixels_inside_box_from_partner_outside_own():
    images = _images(16, 12, 10, 2)
    batch = _cutmix(jax.random.key(3), images, grid_hw=(3, 5), group_size=8)
    images, mixed = np.asarray(images), np.asarray(batch.images)
    partner, boxes = np.asarray(batch.partner), np.asarray(batch.boxes)
    n_pasted = 0
    for b in range(16):
        y0, x0, y1, x1 = boxes[b]
        inside = np.zeros((12, 10), bool)
        inside[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(mixed[b][inside], images[partner[b]][inside])
        np.testing.assert_array_equal(mixed[b][~inside], images[b][~inside])
        n_pasted += int(inside.any() and partner[b] != b)
    assert n_pasted >= 8


def test_dtype_preserved():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)), jnp.uint8)
    batch = _cutmix(jax.random.key(0), images, grid_hw=(4, 4))
    assert batch.images.dtype == jnp.uint8
    assert batch.partner.dtype == jnp.int32 and batch.boxes.dtype == jnp.int32
    assert batch.lam.dtype == jnp.float32 and batch.coverage.dtype == jnp.float32


def test_partner_stays_inside_its_group():
    perm = np.asarray(_group_permutation(jax.random.key(4), 24, 4))
    assert perm.dtype == np.int32
    for g in range(6):
        assert sorted(perm[4 * g: 4 * g + 4]) == list(range(4 * g, 4 * g + 4))
    full = np.asarray(_group_permutation(jax.random.key(4), 24, None))
    assert sorted(full) == list(range(24))
    assert np.any(full // 4 != np.arange(24) // 4)  # the whole-batch permutation crosses groups

    batch = _cutmix(jax.random.key(5), _images(24, 8, 8), grid_hw=(2, 2), group_size=6)
    partner = np.asarray(batch.partner)
    np.testing.assert_array_equal(partner // 6, np.arange(24) // 6)
    for g in range(4):
        assert sorted(partner[6 * g: 6 * g + 6]) == list(range(6 * g, 6 * g + 6))


def test_group_size_must_divide_batch():
    with pytest.raises(ValueError, match="group_size"):
        _cutmix(jax.random.key(0), _images(12, 4, 4), grid_hw=(2, 2), group_size=5)
    with pytest.raises(ValueError, match="group_size"):
        _group_permutation(jax.random.key(0), 12, 0)


def _side_pmf(size, beta):
    """P(c) for the unclipped side c = floor(size * sqrt(u)), u = 1 - lam0 ~ Beta(beta, beta)."""
    cdfs = {
        1.0: lambda u: u,  # Beta(1, 1) = Uniform(0, 1)
        0.5: lambda u: 2.0 / np.pi * np.arcsin(np.sqrt(u)),  # the arcsine law
    }
    edges = (np.arange(size + 1) / size) ** 2
    return np.diff(cdfs[beta](edges))  # c = size needs u == 1: probability 0


def _exact_area_pmf(size, beta):
    """Exact law of the clipped box area for a size x size image and prob=1.

    Both sides share c; the centres are independent and uniform over pixels; a side's
    clipped length is clip(cy - c//2 + c) - clip(cy - c//2).
    """
    pmf = np.zeros(size * size + 1)
    centres = np.arange(size)
    for c, p_c in enumerate(_side_pmf(size, beta)):
        lo = centres - c // 2
        length = np.clip(lo + c, 0, size) - np.clip(lo, 0, size)
        area = (length[:, None] * length[None, :]).ravel()
        np.add.at(pmf, area, p_c / size**2)
    return pmf


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_lambda_distribution_matches_exact_law(beta):
    # Clipping shrinks boxes near the border, so the recomputed lambda is NOT Beta(beta, beta):
    # for beta=1 its mean is about 0.69 on a 32x32 image (about 0.68 in the continuous limit,
    # where the expected area is E[(sqrt(u) - u/4)^2] = 1/2 - 1/5 + 1/48), not 0.5. So the
    # 20k samples are compared with the exact law of the clipped area, enumerated above.
    size, n = 32, 20_000
    boxes, lam = _sample_boxes(jax.random.key(6), n, (size, size), beta=beta, prob=1.0)
    boxes = np.asarray(boxes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    pmf = _exact_area_pmf(size, beta)
    assert abs(pmf.sum() - 1.0) < 1e-12
    exact_mean_lam = 1.0 - (pmf * np.arange(pmf.size)).sum() / size**2
    assert exact_mean_lam > 0.6  # far from the unclipped mean 0.5
    # Both CDFs are step functions jumping only at integer areas, so comparing them at every
    # integer is the exact two-sided KS statistic. Under the null, P(D > 1.63/sqrt(n)) ~ 0.01
    # (conservative for discrete laws); 0.015 is about 2.1/sqrt(n), i.e. p < 1e-3.
    empirical = np.cumsum(np.bincount(area, minlength=pmf.size)) / n
    ks = np.abs(empirical - np.cumsum(pmf)).max()
    assert ks < 0.015, ks
    # Mean within 4 standard errors.
    std = np.sqrt((pmf * (np.arange(pmf.size) / size**2 - (1 - exact_mean_lam)) ** 2).sum())
    assert abs(float(np.mean(lam)) - exact_mean_lam) < 4 * std / np.sqrt(n)


def test_prob_zero_is_identity():
    images = _images(8, 10, 10)
    batch = _cutmix(jax.random.key(7), images, grid_hw=(5, 5), prob=0.0)
    np.testing.assert_array_equal(batch.images, images)
    np.testing.assert_array_equal(batch.lam, np.ones(8, np.float32))
    np.testing.assert_array_equal(batch.coverage, np.zeros((8, 5, 5), np.float32))
    np.testing.assert_array_equal(batch.boxes, np.zeros((8, 4), np.int32))


def test_prob_half_applies_to_about_half():
    boxes, lam = _sample_boxes(jax.random.key(8), 4000, (32, 32), beta=1.0, prob=0.5)
    # A drawn box has side 0 only if u < 1/1024; so ~50% of samples keep lam == 1.
    frac_untouched = float(np.mean(np.asarray(lam) == 1.0))
    assert 0.46 < frac_untouched < 0.54


@pytest.mark.parametrize(
    "image_hw,grid_hw", [((28, 28), (3, 3)), ((28, 28), (7, 7)), ((32, 32), (5, 5)), ((224, 224), (7, 7)), ((20, 12), (3, 5))]
)
def test_coverage_matches_supersampled_mask(image_hw, grid_hw):
    height, width = image_hw
    rng = np.random.default_rng(9)
    ys = np.sort(rng.integers(0, height + 1, (16, 2)), axis=1)
    xs = np.sort(rng.integers(0, width + 1, (16, 2)), axis=1)
    boxes = np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1).astype(np.int32)
    edge_cases = np.array(
        [[0, 0, height, width], [0, 0, 0, 0], [0, 0, 1, 1], [height - 1, width - 1, height, width], [5, 3, 6, 11]],
        np.int32,
    )
    boxes = np.concatenate([boxes, edge_cases])
    cov = np.asarray(_cell_coverage(jnp.asarray(boxes), image_hw, grid_hw))
    expected = np.stack([_brute_coverage(b, image_hw, grid_hw) for b in boxes])
    np.testing.assert_allclose(cov, expected, atol=1e-6)


def test_coverage_hand_case():
    # 28x28 image, 3x3 grid: cell edges at 0, 28/3, 56/3, 28. Box rows [0, 14), cols [0, 28):
    # row cell 0 fully covered, row cell 1 covers [28/3, 14) -> (14 - 28/3) / (28/3) = 0.5.
    cov = np.asarray(_cell_coverage(jnp.array([[0, 0, 14, 28]]), (28, 28), (3, 3)))[0]
    np.testing.assert_allclose(cov, [[1, 1, 1], [0.5, 0.5, 0.5], [0, 0, 0]], atol=1e-6)


def test_same_under_jit():
    images = _images(16, 12, 12)
    kwargs = dict(grid_hw=(3, 3), beta=1.0, prob=0.7, group_size=4)
    eager = cm.cutmix(jax.random.key(10), images, **kwargs)
    jitted = jax.jit(functools.partial(cm.cutmix, **kwargs))(jax.random.key(10), images)
    for name, a, b in zip(cm.CutMixBatch._fields, eager, jitted):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_sharded_batch_gives_same_result_without_communication(axis_type):
    assert jax.device_count() == 8
    images = _images(32, 8, 8)
    kwargs = dict(grid_hw=(2, 2), beta=1.0, prob=1.0, group_size=4)  # 4 = per-device batch
    reference = _cutmix(jax.random.key(11), images, **kwargs)

    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    fn = jax.jit(functools.partial(cm.cutmix, **kwargs))
    with jax.set_mesh(mesh):
        sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
        out = fn(jax.random.key(11), sharded)
        hlo = fn.lower(jax.random.key(11), sharded).compile().as_text()
    for name, a, b in zip(cm.CutMixBatch._fields, reference, out):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert out.images.sharding.spec[0] == "data"
    # The gather stays on each device: no collective moves image data. (With Auto axes the
    # partitioner splits the Beta sampler's rejection loop and syncs its scalar loop condition.)
    collectives = re.findall(
        r"= (\w+\[[\d,]*\])(?:\{[^}]*\})? (all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter)\(", hlo
    )
    assert all(shape.endswith("[]") for shape, _ in collectives), collectives


def test_groups_spanning_explicit_shards_still_work():
    # group_size=None pairs across the whole batch: correct, at the price of a gather.
    images = _images(32, 8, 8)
    reference = _cutmix(jax.random.key(12), images, grid_hw=(2, 2))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        out = _cutmix(jax.random.key(12), jax.device_put(images, NamedSharding(mesh, P("data"))), grid_hw=(2, 2))
    for name, a, b in zip(cm.CutMixBatch._fields, reference, out):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert out.images.sharding.spec[0] == "data"
