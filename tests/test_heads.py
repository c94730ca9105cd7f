"""SAOL and GAP-FC heads: probabilistic invariants, eq. 2, initial attention, cost."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saol_jax.models.heads import GapFcHead, MultiScaleDecoder, SaolHead, resize_to_grid

STAGES = (8, 12, 16)
SMALL_SAOL = {"num_stages": 3, "att_kernel": 1, "att_width": 6, "mid_width": 4, "attention_floor": 0.0}


def _saol_head(num_classes: int = 5, **overrides) -> SaolHead:
    """A small SAOL head on STAGES; `overrides` replace SMALL_SAOL's settings or add dtype."""
    return SaolHead(STAGES, num_classes, **{**SMALL_SAOL, **overrides}, rngs=nnx.Rngs(0))


def _features(key, batch=3):
    """Three stage maps at 16x16, 8x8 and 4x4, like a small CIFAR backbone."""
    k1, k2, k3 = jax.random.split(key, 3)
    return [
        jax.random.normal(k1, (batch, 16, 16, STAGES[0])),
        jax.random.normal(k2, (batch, 8, 8, STAGES[1])),
        jax.random.normal(k3, (batch, 4, 4, STAGES[2])),
    ]


def _perturbed_head(num_classes=5, **kwargs):
    """A SAOL head whose attention output conv is no longer zero."""
    head = _saol_head(num_classes, **kwargs)
    key = jax.random.key(7)
    head.att_out.kernel[...] = jax.random.normal(key, head.att_out.kernel[...].shape)
    return head


def test_probabilities_are_normalised():
    out = _perturbed_head()(_features(jax.random.key(0)))
    assert out["log_attention"].shape == (3, 4, 4)
    assert out["log_spatial"].shape == (3, 4, 4, 5)
    assert out["log_probs"].shape == (3, 5)
    np.testing.assert_allclose(jnp.exp(out["log_attention"]).sum((1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(out["log_spatial"]).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(out["log_probs"]).sum(-1), 1.0, rtol=1e-5)
    # Non-uniform attention after the perturbation, so the checks above are not trivial.
    assert float(jnp.exp(out["log_attention"]).std()) > 1e-3


def test_output_is_attention_weighted_spatial_distribution():
    out = _perturbed_head()(_features(jax.random.key(1)))
    attention = np.exp(np.asarray(out["log_attention"], np.float64))
    spatial = np.exp(np.asarray(out["log_spatial"], np.float64))
    naive = np.zeros((3, 5))
    for b in range(3):
        for i in range(4):
            for j in range(4):
                naive[b] += attention[b, i, j] * spatial[b, i, j]
    np.testing.assert_allclose(np.exp(out["log_probs"]), naive, rtol=1e-5, atol=1e-7)


def test_attention_is_uniform_at_initialisation():
    head = _saol_head()
    out = head(_features(jax.random.key(2)))
    np.testing.assert_array_equal(out["log_attention"], jnp.full((3, 4, 4), -jnp.log(16.0)))


def test_attention_floor_spreads_that_share_of_the_mass_evenly():
    features = _features(jax.random.key(3))
    plain = _perturbed_head()(features)
    floored_head = _perturbed_head(attention_floor=0.5)
    floored = floored_head(features)
    attention = np.exp(np.asarray(plain["log_attention"], np.float64))
    expected = 0.5 * attention + 0.5 / 16
    np.testing.assert_allclose(np.exp(floored["log_attention"]), expected, rtol=1e-5)
    assert float(np.exp(floored["log_attention"]).min()) >= 0.5 / 16 * (1 - 1e-5)
    # The output is still eq. 2 with the floored attention: the plain output blended with the cells' mean.
    spatial = np.exp(np.asarray(plain["log_spatial"], np.float64))
    blended = 0.5 * np.exp(np.asarray(plain["log_probs"], np.float64)) + 0.5 * spatial.mean(axis=(1, 2))
    np.testing.assert_allclose(np.exp(floored["log_probs"]), blended, rtol=1e-5)
    with pytest.raises(ValueError, match="attention_floor"):
        _saol_head(attention_floor=1.0)


def test_num_stages_selects_the_last_maps():
    head = _saol_head(num_stages=2)
    assert [p.conv.in_features for p in head.projections] == [12, 16]
    assert head.classifier.in_features == 8
    with pytest.raises(ValueError, match="num_stages"):
        _saol_head(num_stages=4)


def test_attention_kernel_is_configurable():
    head = _saol_head(att_kernel=3)
    assert head.att_hidden.conv.kernel[...].shape == (3, 3, 16, 6)


def test_resize_pools_integer_factors_and_interpolates_otherwise():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    pooled = resize_to_grid(x, (2, 2))
    np.testing.assert_allclose(pooled[0, 0, 0, 0], x[0, :2, :2, 0].mean())
    odd = resize_to_grid(jnp.ones((1, 14, 14, 3)), (4, 4))
    assert odd.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(odd, 1.0, rtol=1e-6)


def test_bfloat16_activations_give_float32_outputs():
    head = _saol_head(dtype=jnp.bfloat16)
    feats = [f.astype(jnp.bfloat16) for f in _features(jax.random.key(3))]
    out = head(feats)
    assert all(v.dtype == jnp.float32 for v in out.values())


def test_gap_fc_head_averages_then_classifies():
    head = GapFcHead(4, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(4), (2, 5, 5, 4))
    expected = x.mean((1, 2)) @ head.fc.kernel[...] + head.fc.bias[...]
    np.testing.assert_allclose(head(x), expected, rtol=1e-5)


def test_class_activation_maps_average_to_the_logits():
    head = GapFcHead(4, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(5), (2, 5, 5, 4))
    cam = head.cam(x)
    assert cam.shape == (2, 5, 5, 3)
    np.testing.assert_allclose(cam[1, 2, 3], x[1, 2, 3] @ head.fc.kernel[...] + head.fc.bias[...], rtol=1e-5)
    np.testing.assert_allclose(cam.mean((1, 2)), head(x), rtol=1e-5, atol=1e-6)


def _forward_flops(head: str) -> float:
    """XLA cost-analysis FLOPs of the eval forward of ResNet-50 at 224x224, 1000 classes."""
    import ml_collections

    from saol_jax.models import build_model

    config = ml_collections.ConfigDict({
        "backbone": "resnet50", "backbone_kwargs": {}, "head": head, "dtype": "float32",
        "ghost_bn_size": 0,
        "saol": {"num_stages": 3, "att_kernel": 1, "att_width": 256, "mid_width": 256, "attention_floor": 0.0},
    })
    model = nnx.eval_shape(lambda: build_model(config, num_classes=1000, in_channels=3, rngs=nnx.Rngs(0)))
    model.eval()
    graphdef, state = nnx.split(model)

    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    return float(jax.jit(forward).lower(state, images).cost_analysis()["flops"])


def test_saol_adds_at_most_three_percent_flops_to_resnet50():
    gap, saol = _forward_flops("gap"), _forward_flops("saol")
    overhead = saol / gap - 1.0
    # README "Head cost" records the measured figure.
    assert 0.0 < overhead <= 0.03, f"SAOL adds {100 * overhead:.2f}% FLOPs"


# ----------------------------------------------------------------------------- the gap_ms control


def test_multi_scale_decoder_gives_the_saol_heads_fused_features():
    saol = _saol_head(num_stages=2)
    decoder = MultiScaleDecoder(STAGES, num_stages=2, mid_width=4, rngs=nnx.Rngs(1))
    assert decoder.width == 2 * 4
    features = _features(jax.random.key(8))
    assert decoder(features).shape == (3, 4, 4, 8)
    # With SAOL's projection weights, SAOL's own classifier on the decoder's output is SAOL's spatial logits.
    nnx.update(decoder.projections, nnx.state(saol.projections))
    spatial = jax.nn.log_softmax(saol.classifier(decoder(features)), axis=-1)
    np.testing.assert_allclose(spatial, saol(features)["log_spatial"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_stages"):
        MultiScaleDecoder(STAGES, num_stages=4, mid_width=4, rngs=nnx.Rngs(0))


def _tiny_model(head: str):
    from benchmarks.head_cost import model_config
    from saol_jax.models import build_model

    config = model_config("resnet_cifar", head, 8, depth=8, widths=STAGES)
    return build_model(config, num_classes=5, in_channels=3, rngs=nnx.Rngs(0))


def test_gap_ms_model_classifies_the_fused_features_and_has_their_cam():
    model = _tiny_model("gap_ms")
    model.eval()
    images = jax.random.normal(jax.random.key(9), (2, 16, 16, 3))
    out = model(images, with_cam=True)
    assert set(out) == {"gap_logits", "cam"}  # no attention
    features = model.backbone(images)
    fused = model.gap_decoder(features)
    np.testing.assert_allclose(out["gap_logits"], model.gap_fc(fused), rtol=1e-5)
    # The CAM is on the decoder's grid, the last stage's (SAOL's attention grid), and averages to the logits.
    saol_grid = _tiny_model("saol")(images)["log_attention"].shape[1:]
    assert out["cam"].shape == (2, *saol_grid, 5) == (2, *features[-1].shape[1:3], 5)
    np.testing.assert_allclose(out["cam"].mean((1, 2)), out["gap_logits"], rtol=1e-5, atol=1e-6)


def test_gap_ms_cost_over_gap():
    """What gap_ms adds to gap: SAOL's S = 3 projections (1x1 conv C_s -> C_mid and BatchNorm each),
    and the classifier reads S * C_mid channels instead of the last stage's C_L.

    Parameters: sum_s (C_s C_mid + 2 C_mid) + (S C_mid - C_L) K (the classifier's bias stays K).
    FLOPs: the projections' 2 Ho Wo C_mid sum_s C_s multiply-adds and the classifier's 2 (S C_mid - C_L) K,
    plus elementwise work (pooling the earlier stages to the grid, BatchNorm, ReLU, the mean), which is
    at most a few operations per value. Less than the whole SAOL head in both.
    """
    from benchmarks.head_cost import forward_cost, model_config

    mid, classes, size = 8, 5, 16
    cost = {head: forward_cost(model_config("resnet_cifar", head, mid, depth=8, widths=STAGES), size, classes)
            for head in ("gap", "gap_ms", "saol")}
    (gap_params, gap_flops), (ms_params, ms_flops), (saol_params, saol_flops) = cost.values()
    s = len(STAGES)
    assert ms_params - gap_params == sum(c * mid + 2 * mid for c in STAGES) + (s * mid - STAGES[-1]) * classes
    grid = (size // 4) ** 2  # the last stage of this ResNet-8 is 4x4 at 16x16 inputs
    matmuls = 2 * grid * mid * sum(STAGES) + 2 * (s * mid - STAGES[-1]) * classes
    resized = sum((size // 2**i) ** 2 * c for i, c in enumerate(STAGES[:-1]))  # values pooled to the grid
    elementwise_bound = 2 * resized + 8 * grid * s * mid
    assert matmuls < ms_flops - gap_flops <= matmuls + elementwise_bound
    assert gap_params < ms_params < saol_params and gap_flops < ms_flops < saol_flops
