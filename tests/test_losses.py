"""Tests for saol_jax.core.losses: each term on hand-computed cases, masking, gradients, the loss dict."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saol_jax.core import losses as L

# A 2-class, 2x2-grid example used throughout: attention A and class-0 probabilities Y0 per cell.
A = np.array([[0.1, 0.2], [0.3, 0.4]])
Y0 = np.array([[0.5, 0.25], [0.75, 0.5]])
Y = np.stack([Y0, 1.0 - Y0], axis=-1)  # [2, 2, K=2]


def _log(x):
    return jnp.log(jnp.asarray(x, jnp.float32))


def _outputs(batch):
    """SAOL outputs for `batch` copies of the example (y_hat = sum_ij A Y = [0.525, 0.475])."""
    log_a = jnp.broadcast_to(_log(A), (batch, 2, 2))
    log_y = jnp.broadcast_to(_log(Y), (batch, 2, 2, 2))
    return {
        "log_attention": log_a,
        "log_spatial": log_y,
        "log_probs": jax.nn.logsumexp(log_a[..., None] + log_y, axis=(1, 2)),
        "gap_logits": jnp.broadcast_to(jnp.array([0.0, math.log(3.0)], jnp.float32), (batch, 2)),
    }


def test_mixed_cross_entropy_hand_values():
    log_probs = _log([[0.5, 0.5], [0.25, 0.75], [0.2, 0.8]])
    out = L.mixed_cross_entropy(log_probs, jnp.array([0, 1, 0]), jnp.array([1, 0, 1]), jnp.array([0.5, 1.0, 0.25]))
    expected = [
        math.log(2.0),  # -(0.5 log 0.5 + 0.5 log 0.5)
        -math.log(0.75),  # lam = 1: only y_a counts
        -(0.25 * math.log(0.2) + 0.75 * math.log(0.8)),
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == jnp.float32


def test_mixed_cross_entropy_zero_weight_ignores_minus_inf():
    # lam = 1 with log p[y_b] = -inf must give the finite -log p[y_a], not NaN.
    log_probs = jnp.array([[0.0, -jnp.inf]])
    out = L.mixed_cross_entropy(log_probs, jnp.array([0]), jnp.array([1]), jnp.array([1.0]))
    np.testing.assert_array_equal(out, [0.0])


def test_spatial_logit_loss_hand_values():
    m = jnp.array([[[0.0, 1.0], [0.5, 0.0]]])
    out = L.spatial_logit_loss(_log(Y)[None], jnp.array([0]), jnp.array([1]), m)
    cells = [
        -math.log(0.5),  # (0,0): m=0, target class 0, Y0=0.5
        -math.log(0.75),  # (0,1): m=1, target class 1, Y1=0.75
        -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)),  # (1,0): half/half
        -math.log(0.5),  # (1,1)
    ]
    np.testing.assert_allclose(out, [sum(cells) / 4], rtol=1e-6)


def _attention_case():
    # Four examples with y_a = 0, y_b = 1 and coverage:
    m = jnp.array(
        [
            [[0.0, 1.0], [0.0, 0.0]],  # box = cell (0,1)
            [[0.0, 0.0], [0.0, 0.0]],  # no box: region b is empty
            [[0.5, 0.0], [0.0, 0.0]],  # half of cell (0,0)
            [[1.0, 1.0], [1.0, 1.0]],  # box = whole image: region a is empty
        ]
    )
    expected_loss = [
        # a: (0.1*0.5 + 0.3*0.75 + 0.4*0.5) / 0.8 = 0.59375; b: Y1 at (0,1) = 0.75
        -math.log(0.475 / 0.8) - math.log(0.75),
        # a: sum A Y0 = 0.525; b skipped
        -math.log(0.525),
        # a: (0.5*0.1*0.5 + 0.2*0.25 + 0.3*0.75 + 0.4*0.5) / (0.05 + 0.9) = 0.5 / 0.95; b: Y1 at (0,0) = 0.5
        -math.log(0.5 / 0.95) - math.log(0.5),
        # a skipped; b: sum A Y1 = 0.475
        -math.log(0.475),
    ]
    return m, expected_loss, [2.0, 1.0, 2.0, 1.0]


def test_attention_loss_hand_values():
    m, expected_loss, expected_count = _attention_case()
    out = _outputs(4)
    loss, count = L.attention_loss(out["log_attention"], out["log_spatial"], jnp.zeros(4, int), jnp.ones(4, int), m)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_array_equal(count, expected_count)


def test_attention_loss_empty_region_has_finite_gradients():
    m, _, _ = _attention_case()
    out = _outputs(4)
    labels_a, labels_b = jnp.zeros(4, int), jnp.ones(4, int)

    def total(log_a, log_y):
        loss, _ = L.attention_loss(log_a, log_y, labels_a, labels_b, m)
        return jnp.sum(loss)

    value, (g_a, g_y) = jax.value_and_grad(total, argnums=(0, 1))(out["log_attention"], out["log_spatial"])
    assert np.isfinite(value)
    assert np.all(np.isfinite(g_a)) and np.all(np.isfinite(g_y))
    # Example 1 (no box) only has region a: nothing flows into class 1's spatial logits.
    np.testing.assert_array_equal(g_y[1, ..., 1], 0.0)
    # Example 3 (full box) only has region b: nothing flows into class 0's spatial logits.
    np.testing.assert_array_equal(g_y[3, ..., 0], 0.0)
    # The valid regions do train the attention.
    assert np.abs(g_a[1]).sum() > 0 and np.abs(g_a[3]).sum() > 0
    # Example 0, region b is cell (0,1) alone: d(-log Y1[0,1]) / d log Y1[0,1] = -1.
    # Region a excludes that cell, so it adds nothing there.
    np.testing.assert_allclose(g_y[0, 0, 1, 1], -1.0, rtol=1e-6)


def test_distillation_loss_values_and_stop_gradient():
    teacher = _log([[0.25, 0.75]])
    student = jnp.array([[0.0, 0.0]])  # q = [0.5, 0.5]
    np.testing.assert_allclose(L.distillation_loss(teacher, student), [math.log(2.0)], rtol=1e-6)
    g_teacher, g_student = jax.grad(lambda t, s: L.distillation_loss(t, s).sum(), argnums=(0, 1))(teacher, student)
    np.testing.assert_array_equal(g_teacher, 0.0)
    np.testing.assert_allclose(g_student, [[0.5 - 0.25, 0.5 - 0.75]], rtol=1e-6)  # q - p


def test_loss_terms_values_and_total():
    m, expected_ss2, expected_count = _attention_case()
    out = _outputs(4)
    la, lb = jnp.zeros(4, int), jnp.ones(4, int)
    lam = 1.0 - m.mean(axis=(1, 2))  # [0.75, 1, 0.875, 0]
    weights = {"saol": 1.0, "ss1": 0.5, "ss2": 2.0, "sd": 0.25, "gap": 0.1}
    terms = jax.jit(functools.partial(L.loss_terms, weights=weights, ss2_form="renorm"))(out, la, lb, lam, m)
    assert set(terms) == {"saol_ce", "ss1", "ss2", "sd", "gap_ce", "total"}

    y_hat = np.array([0.525, 0.475])
    saol = np.mean([-(l * math.log(y_hat[0]) + (1 - l) * math.log(y_hat[1])) for l in np.asarray(lam)])
    np.testing.assert_allclose(terms["saol_ce"], saol, rtol=1e-6)
    np.testing.assert_allclose(terms["ss1"], np.mean(L.spatial_logit_loss(out["log_spatial"], la, lb, m)), rtol=1e-6)
    # SS-2: sum of valid region terms over the number of valid regions (6), not over examples.
    np.testing.assert_allclose(terms["ss2"], sum(expected_ss2) / sum(expected_count), rtol=1e-6)
    # GAP logits [0, log 3] -> q = [0.25, 0.75]; SD = -(0.525 log 0.25 + 0.475 log 0.75).
    np.testing.assert_allclose(terms["sd"], -(0.525 * math.log(0.25) + 0.475 * math.log(0.75)), rtol=1e-6)
    gap = np.mean([-(l * math.log(0.25) + (1 - l) * math.log(0.75)) for l in np.asarray(lam)])
    np.testing.assert_allclose(terms["gap_ce"], gap, rtol=1e-6)
    expected_total = sum(weights[w] * float(terms[t]) for w, t in L.WEIGHT_TO_TERM.items())
    np.testing.assert_allclose(terms["total"], expected_total, rtol=1e-6)


def test_zero_weight_terms_are_absent():
    out = _outputs(2)
    terms = L.loss_terms(out, jnp.zeros(2, int), jnp.ones(2, int), None, None, {"saol": 1.0, "ss1": 0.0, "ss2": 0.0, "sd": 0.0, "gap": 2.0})
    assert set(terms) == {"saol_ce", "gap_ce", "total"}
    np.testing.assert_allclose(terms["total"], terms["saol_ce"] + 2.0 * terms["gap_ce"], rtol=1e-6)
    # No CutMix (lam None): plain CE on y_a = 0.
    np.testing.assert_allclose(terms["saol_ce"], -math.log(0.525), rtol=1e-6)


def test_no_cutmix_coverage_none_equals_zero_coverage():
    out = _outputs(2)
    la, lb = jnp.array([0, 1]), jnp.array([1, 0])
    weights = {"ss1": 1.0, "ss2": 1.0}
    a = L.loss_terms(out, la, lb, None, None, weights, ss2_form="renorm")
    b = L.loss_terms(out, la, lb, jnp.ones(2), jnp.zeros((2, 2, 2)), weights, ss2_form="renorm")
    for key in ("ss1", "ss2", "total"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
    # Without a box SS-2 is plain CE on the whole-image y_hat: -(log 0.525 + log 0.475) / 2.
    np.testing.assert_allclose(a["ss2"], -(math.log(0.525) + math.log(0.475)) / 2, rtol=1e-6)


def test_missing_outputs_raise():
    gap_only = {"gap_logits": jnp.zeros((2, 3))}
    la = jnp.zeros(2, int)
    terms = L.loss_terms(gap_only, la, la, None, None, {"gap": 1.0, "saol": 0.0, "ss1": 0.0})
    np.testing.assert_allclose(terms["total"], math.log(3.0), rtol=1e-6)
    for weight, term in [("ss1", "ss1"), ("saol", "saol_ce"), ("ss2", "ss2"), ("sd", "sd")]:
        with pytest.raises(ValueError, match=term):
            L.loss_terms(gap_only, la, la, None, None, {"gap": 1.0, weight: 1.0}, ss2_form="renorm")
    with pytest.raises(ValueError, match="Unknown"):
        L.loss_terms(gap_only, la, la, None, None, {"gap_ce": 1.0})


def test_example_weight_masks_examples():
    out = dict(_outputs(3))
    # Example 2 is padding whose log-probs are -inf at its label: it must not leak in.
    out["log_probs"] = out["log_probs"].at[2].set(jnp.array([-jnp.inf, 0.0]))
    m, _, _ = _attention_case()
    m = m[:3]
    la, lb = jnp.zeros(3, int), jnp.ones(3, int)
    lam = 1.0 - m.mean(axis=(1, 2))
    weights = {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 1.0, "gap": 1.0}
    mask = jnp.array([1.0, 1.0, 0.0])
    masked = L.loss_terms(out, la, lb, lam, m, weights, example_weight=mask, ss2_form="renorm")
    sub = {k: v[:2] for k, v in out.items()}
    first_two = L.loss_terms(sub, la[:2], lb[:2], lam[:2], m[:2], weights, ss2_form="renorm")
    assert set(masked) == set(first_two)
    for key in masked:
        assert np.isfinite(masked[key]), key
        np.testing.assert_allclose(masked[key], first_two[key], rtol=1e-6, err_msg=key)
    # All weights zero: every term is 0, not NaN.
    zero = L.loss_terms(out, la, lb, lam, m, weights, example_weight=jnp.zeros(3), ss2_form="renorm")
    for key, value in zero.items():
        assert float(value) == 0.0, key


def test_loss_gradients_finite_with_empty_regions():
    m, _, _ = _attention_case()
    out = _outputs(4)
    weights = {"saol": 1.0, "ss1": 1.0, "ss2": 1.0, "sd": 1.0, "gap": 1.0}
    lam = 1.0 - m.mean(axis=(1, 2))

    def total(o):
        return L.loss_terms(o, jnp.zeros(4, int), jnp.ones(4, int), lam, m, weights, ss2_form="renorm")["total"]

    grads = jax.grad(total)(dict(out))
    for key, g in grads.items():
        assert np.all(np.isfinite(g)), key
        assert np.abs(g).sum() > 0, key


def test_topk_correct():
    scores = jnp.array([[0.1, 0.5, 0.4], [0.3, 0.2, 0.1], [0.2, 0.2, 0.6]])
    labels = jnp.array([2, 2, 1])
    np.testing.assert_array_equal(L.topk_correct(scores, labels, 1), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(L.topk_correct(scores, labels, 2), [1.0, 0.0, 1.0])  # tie counts as correct
    np.testing.assert_array_equal(L.topk_correct(scores, labels, 3), [1.0, 1.0, 1.0])


def test_topk_correct_never_counts_nan():
    nan, inf = float("nan"), float("inf")
    scores = jnp.array([[nan, nan, nan], [0.9, nan, 0.1], [0.1, 0.2, 0.3], [-inf, -inf, 0.0]])
    labels = jnp.array([0, 0, 2, 2])
    # Without the NaN guard the first two rows rank first (NaN compares false).
    np.testing.assert_array_equal(L.topk_correct(scores, labels, 1), [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(L.topk_correct(scores, labels, 3), [0.0, 0.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- SS-2 forms

# One 2x2 example: the left column shows image A (label 0), the right column the pasted
# image B (label 1); Y names each column's label with probability 0.9.
M_COLUMNS = jnp.array([[[0.0, 1.0], [0.0, 1.0]]])
Y_COLUMNS = jnp.log(jnp.array([[[[0.9, 0.1], [0.1, 0.9]], [[0.6, 0.4], [0.1, 0.9]]]]))
LABEL_A, LABEL_B = jnp.array([0]), jnp.array([1])


def _score_grad(loss_of_attention, scores):
    """Gradient of a loss of log A = log_softmax(scores) [1, 2, 2] w.r.t. the scores."""
    def loss(s):
        log_a = jax.nn.log_softmax(s.reshape(1, 4), axis=-1).reshape(1, 2, 2)
        return jnp.sum(loss_of_attention(log_a))
    return np.asarray(jax.grad(loss)(scores))[0]


def _saol_log_probs(log_a, log_y):
    return jax.nn.logsumexp(log_a[..., None] + log_y, axis=(1, 2))


def test_renorm_moves_attention_within_regions_only():
    scores = jnp.array([[[0.3, -0.2], [0.1, 0.4]]])
    grad = _score_grad(lambda log_a: L.attention_loss(log_a, Y_COLUMNS, LABEL_A, LABEL_B, M_COLUMNS)[0], scores)
    # Invariant to scaling either region's attention: no mass moves between regions.
    np.testing.assert_allclose(grad.sum(axis=0), 0.0, atol=1e-6)
    # Inside region A (left column), descent raises the cell whose Y names y_A more (top: 0.9 vs 0.6).
    assert grad[0, 0] < 0 < grad[1, 0]
    # Region B's cells name y_B equally (0.9): nothing to redistribute there.
    np.testing.assert_allclose(grad[:, 1], 0.0, atol=1e-6)


def test_mass_mix_hand_value_and_commitment():
    # A = [[0.1, 0.2], [0.3, 0.4]]: mass in region A (left column) 0.4.
    log_a = _log(A)[None]
    log_probs = _saol_log_probs(log_a, Y_COLUMNS)
    y_hat = np.exp(np.asarray(log_probs[0]))
    expected = -(0.4 * math.log(y_hat[0]) + 0.6 * math.log(y_hat[1]))
    got = L.mass_mix_loss(log_a, log_probs, LABEL_A, LABEL_B, M_COLUMNS)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)

    def loss(log_a):
        return L.mass_mix_loss(log_a, _saol_log_probs(log_a, Y_COLUMNS), LABEL_A, LABEL_B, M_COLUMNS)

    # With more attention on region B (0.6) and y_hat favouring y_B, descent moves mass
    # further into region B: the loss rewards committing to one source.
    grad = _score_grad(loss, jnp.log(jnp.asarray(A, jnp.float32))[None])
    assert grad[:, 1].sum() < 0 < grad[:, 0].sum()
    # The mirror image: most attention on region A, mass moves into A.
    grad = _score_grad(loss, jnp.log(jnp.asarray(A[:, ::-1], jnp.float32))[None])
    assert grad[:, 0].sum() < 0 < grad[:, 1].sum()


def test_pasted_target_by_hand():
    # Two un-mixed images; example 0 gets example 1's right column pasted in (partner 1).
    log_a = _log(np.array([[[0.1, 0.2], [0.3, 0.4]], [[0.25, 0.25], [0.25, 0.25]]]))
    y0 = np.array([[[0.5, 0.5], [0.5, 0.5]], [[0.8, 0.2], [0.8, 0.2]]])  # p(class 0) per cell
    log_y = _log(np.stack([y0, 1.0 - y0], axis=-1))
    labels, partner = jnp.array([0, 1]), jnp.array([1, 0])
    coverage = jnp.stack([M_COLUMNS[0], jnp.zeros((2, 2))])
    target = np.exp(np.asarray(L.pasted_attention_target(log_a, log_y, labels, partner, coverage)))
    # Responsibilities A Y[y] / y_hat[y]: example 0 (label 0) A * 0.5 / 0.5 = A; example 1
    # (label 1) 0.25 * [[0.2, 0.8], [0.2, 0.8]] / 0.5 = [[0.1, 0.4], [0.1, 0.4]].
    # Example 0 keeps its left column (0.1, 0.3) and gets example 1's right one (0.4, 0.4).
    expected = np.array([[0.1, 0.4], [0.3, 0.4]])
    np.testing.assert_allclose(target[0], expected / expected.sum(), rtol=1e-5)
    # Example 1 is not mixed: its own responsibilities.
    np.testing.assert_allclose(target[1], [[0.1, 0.4], [0.1, 0.4]], rtol=1e-5)
    np.testing.assert_allclose(target.sum(axis=(1, 2)), 1.0, rtol=1e-6)


def test_paste_loss_moves_attention_towards_its_target():
    log_target = jnp.log(jnp.array([[[0.1, 0.4], [0.3, 0.2]]]))
    scores = jnp.zeros((1, 2, 2))  # uniform attention 0.25
    grad = _score_grad(lambda log_a: L.paste_loss(log_a, log_target), scores)
    # Cross-entropy of a softmax: the scores' gradient is A - T.
    np.testing.assert_allclose(grad, 0.25 - np.exp(np.asarray(log_target[0])), rtol=1e-5)
    # No gradient flows into the target.
    target_grad = jax.grad(lambda t: jnp.sum(L.paste_loss(jnp.log(jnp.full((1, 2, 2), 0.25)), t)))(log_target)
    np.testing.assert_array_equal(target_grad, 0.0)


@pytest.mark.parametrize("form", L.SS2_FORMS)
def test_loss_terms_select_the_ss2_form(form):
    out = _outputs(2)
    la, lb = jnp.zeros(2, int), jnp.ones(2, int)
    m = jnp.broadcast_to(M_COLUMNS, (2, 2, 2))
    target = jnp.log(jnp.full((2, 2, 2), 0.25)) if form in L.PASTED_TARGET_FORMS else None
    terms = L.loss_terms(out, la, lb, None, m, {"ss2": 1.0}, ss2_form=form, ss2_target=target)
    expected = {
        "renorm": np.mean(L.attention_loss(out["log_attention"], out["log_spatial"], la, lb, m)[0]) / 2,
        "mass_mix": np.mean(L.mass_mix_loss(out["log_attention"], out["log_probs"], la, lb, m)),
        "paste": np.mean(L.paste_loss(out["log_attention"], target)) if target is not None else None,
        # Both examples are mixed (M_COLUMNS): the control equals `paste`.
        "paste_mixed": np.mean(L.paste_loss(out["log_attention"], target)) if target is not None else None,
    }[form]
    np.testing.assert_allclose(terms["ss2"], expected, rtol=1e-6)


def test_unknown_ss2_form_and_paste_without_target_raise():
    out = _outputs(1)
    args = (out, jnp.zeros(1, int), jnp.ones(1, int), None, jnp.zeros((1, 2, 2)), {"ss2": 1.0})
    for wrong in ("area", None):  # no form of its own below the config: None is not 'renorm'
        with pytest.raises(ValueError, match="ss2_form"):
            L.loss_terms(*args, ss2_form=wrong)
    for form in L.PASTED_TARGET_FORMS:
        with pytest.raises(ValueError, match="ss2_target"):
            L.loss_terms(*args, ss2_form=form)
    # Without the SS-2 term the form is not needed.
    terms = L.loss_terms(out, jnp.zeros(1, int), jnp.ones(1, int), None, None, {"saol": 1.0})
    assert set(terms) == {"saol_ce", "total"}


# ----------------------------------------------------------------------------- paste on mixed examples only

# Three examples on a 2x2 grid: 0 and 2 are mixed (0 with its right column pasted, 2 with one
# cell), 1 is un-mixed (empty box: coverage 0 everywhere).
COVERAGE_3 = jnp.array([[[0.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.5, 0.0]]])
SCORES_3 = jnp.array([[[0.3, -0.2], [0.1, 0.4]], [[1.0, 0.0], [-1.0, 0.5]], [[0.0, 0.2], [0.4, -0.3]]])
TARGET_3 = jnp.log(jnp.array([[[0.1, 0.4], [0.3, 0.2]], [[0.7, 0.1], [0.1, 0.1]], [[0.25, 0.25], [0.4, 0.1]]]))


def _ss2_of_scores(form, scores, coverage, target, example_weight=None):
    """The batch SS-2 term of `form` as a function of the attention scores [B, 2, 2]."""
    batch = scores.shape[0]
    log_a = jax.nn.log_softmax(scores.reshape(batch, 4), axis=-1).reshape(batch, 2, 2)
    outputs = {"log_attention": log_a, "log_spatial": jnp.log(jnp.full((batch, 2, 2, 2), 0.5)),
               "log_probs": jnp.log(jnp.full((batch, 2), 0.5))}
    labels = jnp.zeros(batch, int)
    return L.loss_terms(outputs, labels, labels + 1, None, coverage, {"ss2": 1.0}, example_weight,
                        ss2_form=form, ss2_target=target)["ss2"]


def test_paste_mixed_has_no_gradient_on_unmixed_examples():
    grad = jax.grad(functools.partial(_ss2_of_scores, "paste_mixed"))(SCORES_3, COVERAGE_3, TARGET_3)
    np.testing.assert_array_equal(grad[1], 0.0)
    assert np.abs(grad[0]).sum() > 0 and np.abs(grad[2]).sum() > 0
    # `paste` itself pulls the un-mixed example's attention towards its target.
    paste_grad = jax.grad(functools.partial(_ss2_of_scores, "paste"))(SCORES_3, COVERAGE_3, TARGET_3)
    assert np.abs(paste_grad[1]).sum() > 1e-3


def test_paste_mixed_equals_paste_on_mixed_examples():
    paste = functools.partial(_ss2_of_scores, "paste")
    mixed = functools.partial(_ss2_of_scores, "paste_mixed")
    # The mixed examples keep exactly their `paste` gradient (same weight 1 / B each) ...
    np.testing.assert_allclose(jax.grad(mixed)(SCORES_3, COVERAGE_3, TARGET_3)[np.array([0, 2])],
                               jax.grad(paste)(SCORES_3, COVERAGE_3, TARGET_3)[np.array([0, 2])], rtol=1e-6)
    # ... and the loss is `paste`'s minus the un-mixed example's share, by hand:
    per_example = np.asarray(L.paste_loss(jax.nn.log_softmax(SCORES_3.reshape(3, 4), -1).reshape(3, 2, 2),
                                          TARGET_3))
    np.testing.assert_allclose(mixed(SCORES_3, COVERAGE_3, TARGET_3), (per_example[0] + per_example[2]) / 3,
                               rtol=1e-6)
    # A batch of mixed examples only gives exactly `paste`'s loss, also under example weights.
    only_mixed = (np.array([0, 2]), jnp.array([1.0, 0.5]))
    for rows, weight in ((only_mixed[0], None), only_mixed):
        args = (SCORES_3[rows], COVERAGE_3[rows], TARGET_3[rows], weight)
        np.testing.assert_allclose(mixed(*args), paste(*args), rtol=1e-6)
    # A batch of un-mixed examples only (no CutMix) gives 0, where `paste` does not.
    assert float(mixed(SCORES_3[1:2], None, TARGET_3[1:2])) == 0.0 < float(paste(SCORES_3[1:2], None, TARGET_3[1:2]))


def test_loss_weights_come_whole_from_the_config():
    config = {"saol": 1, "ss1": 0.5, "ss2": 0, "sd": 1, "gap": 2, "ss2_form": "paste"}
    assert L.loss_weights(config) == {"saol": 1.0, "ss1": 0.5, "ss2": 0.0, "sd": 1.0, "gap": 2.0}
    # A weight missing from the config is an error, not a silent 0.
    with pytest.raises(ValueError, match=r"lacks the weights \['sd'\]"):
        L.loss_weights({k: v for k, v in config.items() if k != "sd"})
