"""Loss terms of SAOL training as pure functions (docs/method.md §4-§7).

Each term function returns a per-example vector [B]; :func:`loss_terms`
reduces them over the batch (weighted mean) and combines them into ``total``.
All math is float32 and in log space.

The attention loss SS-2 has three forms (config `loss.ss2_form`), three
readings of the paper's "attention must select the region of each pasted
label" (its exact form is not public), and a control of the third. With A the attention, Y the spatial
class distributions, ŷ = Σ_ij A_ij Y_ij, m_ij the fraction of cell (i, j)
covered by the pasted box, y_A / y_B the own / pasted labels:

- ``renorm`` (:func:`attention_loss`): attention renormalised inside each
  source region must name that region's label,
  -log(Σ (1-m) A Y[y_A] / Σ (1-m) A) - log(Σ m A Y[y_B] / Σ m A).
  It moves attention only within each region, never between them (where
  every cell lies wholly in one region, the gradient on the attention
  scores sums to zero over each region).
- ``mass_mix`` (:func:`mass_mix_loss`): the image-level target is mixed by
  the attention's mass per region, λ_A = Σ (1-m) A, instead of by the area:
  -λ_A log ŷ[y_A] - (1-λ_A) log ŷ[y_B], with gradients through λ_A too.
  With region-pure Y this is the binary entropy of λ_A: it moves mass
  towards the region whose label ŷ already favours, so the attention
  commits to one source.
- ``paste`` (:func:`pasted_attention_target`, :func:`paste_loss`): the
  model's own attention and spatial maps of the un-mixed images are cut and
  pasted with the pixels and serve as a stop-gradient target: the cells'
  responsibility for each image's label, R_ij = A_ij Y_ij[y] / ŷ[y], cut by
  the box, T ∝ (1-m) R^A + m R^B[partner], and the loss is the
  cross-entropy -Σ T log A. It needs one extra forward pass of the un-mixed
  batch per train step (done in `saol_jax.core.train_step`).
- ``paste_mixed`` (:func:`mixed_only`): ``paste`` on the mixed examples
  only. On an un-mixed image T is the model's own responsibility map, and
  ``paste``'s gradient on the attention scores equals the classification
  loss's; this form drops those examples (their term is 0, the others keep
  exactly ``paste``'s term and weight), so comparing it with ``paste`` says
  whether ``paste`` helps by more than a heavier classification gradient
  (docs/method.md §8).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

__all__ = [
    "WEIGHT_TO_TERM",
    "mixed_cross_entropy",
    "spatial_logit_loss",
    "attention_loss",
    "mass_mix_loss",
    "pasted_attention_target",
    "responsibility",
    "cut_and_paste",
    "paste_loss",
    "mixed_only",
    "SS2_READINGS",
    "SS2_FORMS",
    "PASTED_TARGET_FORMS",
    "loss_weights",
    "distillation_loss",
    "loss_terms",
    "topk_correct",
]

# Weight key (config) -> term key (loss dict), in the order the terms are logged.
WEIGHT_TO_TERM: dict[str, str] = {
    "saol": "saol_ce",
    "ss1": "ss1",
    "ss2": "ss2",
    "sd": "sd",
    "gap": "gap_ce",
}

# The three readings of the paper's SS-2, and every value `loss.ss2_form` may take (the readings and
# the control `paste_mixed`): the one list every check uses.
SS2_READINGS = ("renorm", "mass_mix", "paste")
SS2_CONTROLS = {"paste_mixed": "paste"}  # control: the form whose mechanism it measures; never a default
SS2_FORMS = (*SS2_READINGS, *SS2_CONTROLS)
# The forms whose target comes from a forward pass of the un-mixed batch.
PASTED_TARGET_FORMS = ("paste", "paste_mixed")

# Model outputs each term needs.
_REQUIRED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "saol": ("log_probs",),
    "ss1": ("log_spatial",),
    "ss2": ("log_attention", "log_spatial", "log_probs"),
    "sd": ("log_probs", "gap_logits"),
    "gap": ("gap_logits",),
}


def _pick(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """log_probs [..., K], labels [B] int -> [...] entries at each example's label.

    Leading dims after the batch (e.g. Ho, Wo) are broadcast over.
    """
    idx = labels.astype(jnp.int32).reshape(labels.shape + (1,) * (log_probs.ndim - 1))
    idx = jnp.broadcast_to(idx, log_probs.shape[:-1] + (1,))
    return jnp.take_along_axis(log_probs, idx, axis=-1)[..., 0]


def _weighted_log(weight: jax.Array, log_value: jax.Array) -> jax.Array:
    """weight * log_value, with 0 where weight == 0 (even if log_value is -inf)."""
    safe = jnp.where(weight > 0, log_value, 0.0)
    return jnp.where(weight > 0, weight * safe, 0.0)


def mixed_cross_entropy(
    log_probs: jax.Array, labels_a: jax.Array, labels_b: jax.Array, lam: jax.Array
) -> jax.Array:
    """-(lam log p[y_a] + (1 - lam) log p[y_b]).

    Args:
      log_probs: [B, K] log class probabilities (SAOL's log y_hat, or
        log_softmax of GAP-FC logits).
      labels_a, labels_b: [B] int, own and partner labels.
      lam: [B] fraction of the image with label y_a.
    Returns:
      [B] float32.
    """
    log_probs = log_probs.astype(jnp.float32)
    lam = lam.astype(jnp.float32)
    own = _weighted_log(lam, _pick(log_probs, labels_a))
    other = _weighted_log(1.0 - lam, _pick(log_probs, labels_b))
    return -(own + other)


def spatial_logit_loss(
    log_spatial: jax.Array, labels_a: jax.Array, labels_b: jax.Array, coverage: jax.Array
) -> jax.Array:
    """SS-1: mean over cells of CE(t_ij, Y_ij), t_ij = (1 - m_ij) onehot(y_a) + m_ij onehot(y_b).

    Args:
      log_spatial: [B, Ho, Wo, K] log class distribution at each cell.
      labels_a, labels_b: [B] int.
      coverage: [B, Ho, Wo] m_ij, fraction of each cell showing the partner.
    Returns:
      [B] float32.
    """
    log_spatial = log_spatial.astype(jnp.float32)
    m = coverage.astype(jnp.float32)
    own = _weighted_log(1.0 - m, _pick(log_spatial, labels_a))
    other = _weighted_log(m, _pick(log_spatial, labels_b))
    return -jnp.mean(own + other, axis=(1, 2))


def _region_term(
    region_w: jax.Array, log_attention: jax.Array, log_label_spatial: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """-log y_hat^R_y for one region; ([B] term, [B] bool valid). Finite value and grads always."""
    positive = region_w > 0
    valid = jnp.any(positive, axis=(1, 2))
    # Cells outside the region get log w = -inf; an empty region uses w = 1
    # everywhere instead so that nothing on the discarded branch is -inf/NaN.
    use = positive | ~valid[:, None, None]
    log_w = jnp.where(
        use, jnp.log(jnp.where(positive, region_w, 1.0)), -jnp.inf
    )
    base = log_w + log_attention
    num = jax.nn.logsumexp(base + log_label_spatial, axis=(1, 2))
    den = jax.nn.logsumexp(base, axis=(1, 2))
    term = jnp.where(valid, den - num, 0.0)
    return term, valid


def attention_loss(
    log_attention: jax.Array,
    log_spatial: jax.Array,
    labels_a: jax.Array,
    labels_b: jax.Array,
    coverage: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """SS-2: attention renormalised inside each source region must name its label.

    For region weights w = 1 - m (label y_a) and w = m (label y_b):
    log y_hat^R_y = LSE_ij(log w + log A + log Y[y]) - LSE_ij(log w + log A),
    term = -log y_hat^R_y. A region with all weights 0 is skipped (term 0, not
    counted), with finite values and gradients.

    Args:
      log_attention: [B, Ho, Wo] log softmax over positions.
      log_spatial: [B, Ho, Wo, K] log softmax over classes.
      labels_a, labels_b: [B] int.
      coverage: [B, Ho, Wo] m_ij.
    Returns:
      (loss, count): [B] float32 sum of valid terms and [B] float32 number of them.
    """
    log_attention = log_attention.astype(jnp.float32)
    log_spatial = log_spatial.astype(jnp.float32)
    m = coverage.astype(jnp.float32)
    term_a, valid_a = _region_term(1.0 - m, log_attention, _pick(log_spatial, labels_a))
    term_b, valid_b = _region_term(m, log_attention, _pick(log_spatial, labels_b))
    count = valid_a.astype(jnp.float32) + valid_b.astype(jnp.float32)
    return term_a + term_b, count


def mass_mix_loss(
    log_attention: jax.Array,
    log_probs: jax.Array,
    labels_a: jax.Array,
    labels_b: jax.Array,
    coverage: jax.Array,
) -> jax.Array:
    """SS-2 ``mass_mix``: -(λ_A log ŷ[y_a] + (1 - λ_A) log ŷ[y_b]), λ_A = Σ_ij (1 - m_ij) A_ij.

    The gradient flows through λ_A as well as through ŷ.

    Args:
      log_attention: [B, Ho, Wo] log softmax over positions.
      log_probs: [B, K] SAOL's log ŷ (computed from the same attention).
      labels_a, labels_b: [B] int.
      coverage: [B, Ho, Wo] m_ij.
    Returns:
      [B] float32.
    """
    attention = jnp.exp(log_attention.astype(jnp.float32))
    mass_a = jnp.clip(jnp.sum((1.0 - coverage.astype(jnp.float32)) * attention, axis=(1, 2)), 0.0, 1.0)
    return mixed_cross_entropy(log_probs, labels_a, labels_b, mass_a)


def pasted_attention_target(
    log_attention: jax.Array,
    log_spatial: jax.Array,
    labels: jax.Array,
    partner: jax.Array,
    coverage: jax.Array,
) -> jax.Array:
    """SS-2 ``paste`` target: the un-mixed images' responsibilities, cut and pasted like the pixels.

    R_ij = A_ij Y_ij[y] / ŷ[y] on each un-mixed image; for the mixed image
    T ∝ (1 - m_ij) R_ij + m_ij R[partner]_ij, normalised over cells. No
    gradient flows into the target.

    Args:
      log_attention: [B, Ho, Wo], log_spatial: [B, Ho, Wo, K]: the model on
        the un-mixed images.
      labels: [B] int; partner: [B] int, the batch index pasted into each
        example; coverage: [B, Ho, Wo] m_ij of the mixed batch.
    Returns:
      [B, Ho, Wo] float32 log T.
    """
    log_resp = responsibility(log_attention, log_spatial, labels)
    return cut_and_paste(log_resp, log_resp[partner], coverage)


def responsibility(log_attention: jax.Array, log_spatial: jax.Array, labels: jax.Array) -> jax.Array:
    """log R_ij = log(A_ij Y_ij[y] / ŷ[y]): each cell's share of the label's probability, no gradient.

    Args:
      log_attention: [B, Ho, Wo]; log_spatial: [B, Ho, Wo, K]; labels: [B] int.
    Returns:
      [B, Ho, Wo] float32 log R (R sums to 1 over cells).
    """
    log_attention = jax.lax.stop_gradient(log_attention.astype(jnp.float32))
    log_spatial = jax.lax.stop_gradient(log_spatial.astype(jnp.float32))
    joint = log_attention + _pick(log_spatial, labels)
    return joint - jax.nn.logsumexp(joint, axis=(1, 2), keepdims=True)


def cut_and_paste(log_resp_own: jax.Array, log_resp_pasted: jax.Array, coverage: jax.Array) -> jax.Array:
    """log T, T ∝ (1 - m_ij) R_own_ij + m_ij R_pasted_ij normalised over cells.

    Args:
      log_resp_own, log_resp_pasted: [B, Ho, Wo] log responsibilities of the own and the pasted image.
      coverage: [B, Ho, Wo] m_ij.
    Returns:
      [B, Ho, Wo] float32 log T.
    """
    m = coverage.astype(jnp.float32)
    own = jnp.where(m < 1.0, jnp.log1p(-jnp.minimum(m, 1.0 - 1e-7)) + log_resp_own, -jnp.inf)
    pasted = jnp.where(m > 0.0, jnp.log(jnp.maximum(m, 1e-30)) + log_resp_pasted, -jnp.inf)
    log_target = jnp.logaddexp(own, pasted)
    return log_target - jax.nn.logsumexp(log_target, axis=(1, 2), keepdims=True)


def paste_loss(log_attention: jax.Array, log_target: jax.Array) -> jax.Array:
    """SS-2 ``paste``: cross-entropy -Σ_ij T_ij log A_ij of the attention against a target T.

    Args:
      log_attention: [B, Ho, Wo] log softmax over positions.
      log_target: [B, Ho, Wo] log T (from :func:`pasted_attention_target`).
    Returns:
      [B] float32.
    """
    target = jnp.exp(jax.lax.stop_gradient(log_target.astype(jnp.float32)))
    return -jnp.sum(jnp.where(target > 0, target * log_attention.astype(jnp.float32), 0.0), axis=(1, 2))


def mixed_only(per_example: jax.Array, coverage: jax.Array) -> jax.Array:
    """per_example [B] where the example's CutMix box is non-empty, else exactly 0 (gradient too).

    coverage: [B, Ho, Wo] m_ij; an un-mixed example has m = 0 everywhere.
    """
    mixed = jnp.any(coverage > 0, axis=(1, 2))
    return jnp.where(mixed, per_example, 0.0)


def distillation_loss(teacher_log_probs: jax.Array, student_logits: jax.Array) -> jax.Array:
    """Self-distillation: -sum_k p_k log q_k, p = stop_gradient(exp(teacher)), q = softmax(student).

    No gradient reaches the teacher.

    Args:
      teacher_log_probs: [B, K] log probabilities (SAOL's log y_hat).
      student_logits: [B, K] logits (GAP-FC).
    Returns:
      [B] float32.
    """
    p = jnp.exp(jax.lax.stop_gradient(teacher_log_probs.astype(jnp.float32)))
    log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.where(p > 0, p * log_q, 0.0), axis=-1)


def loss_weights(loss_config: Mapping[str, object]) -> dict[str, float]:
    """The term weights of a config's `loss` field (which also holds `ss2_form`): every one of
    WEIGHT_TO_TERM, read from the config, which is their only default (saol_jax.core.ladder.BASE_LOSS)."""
    missing = [name for name in WEIGHT_TO_TERM if name not in loss_config]
    if missing:
        raise ValueError(f"the loss config lacks the weights {missing} (it needs {list(WEIGHT_TO_TERM)})")
    return {name: float(loss_config[name]) for name in WEIGHT_TO_TERM}


def _weighted_mean(values: jax.Array, weight: jax.Array, denom: jax.Array | None = None) -> jax.Array:
    """sum(weight * values) / denom (default sum(weight)), 0 if denom is 0.

    Examples with weight 0 contribute exactly 0 even if their value is inf/NaN.
    """
    total_w = jnp.sum(weight) if denom is None else denom
    contrib = jnp.where(weight != 0, weight * jnp.where(weight != 0, values, 0.0), 0.0)
    return jnp.sum(contrib) / jnp.maximum(total_w, 1e-12)


def loss_terms(
    outputs: Mapping[str, jax.Array],
    labels_a: jax.Array,
    labels_b: jax.Array,
    lam: jax.Array | None,
    coverage: jax.Array | None,
    weights: Mapping[str, float],
    example_weight: jax.Array | None = None,
    *,
    ss2_form: str | None = None,
    ss2_target: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Batch-reduced loss terms and their weighted total (docs/method.md §7).

    Args:
      outputs: the model's output dict (``log_attention``, ``log_spatial``,
        ``log_probs``, ``gap_logits``; a GAP-FC-only model has just the last).
      labels_a, labels_b: [B] int, own and partner labels.
      lam: [B] own-label fraction, or None (no CutMix: all ones).
      coverage: [B, Ho, Wo] partner coverage per cell, or None (all zeros).
      weights: static Python floats keyed ``saol, ss1, ss2, sd, gap``. A term
        whose weight is 0 or missing is not computed and absent from the result.
      example_weight: [B] per-example weights (e.g. a 0/1 padding mask); None =
        all ones. Each term is a weighted mean over the batch; SS-2 ``renorm``
        divides the weighted sum of region terms by the weighted number of
        valid regions.
      ss2_form: one of SS2_FORMS (see the module docstring), the config's
        `loss.ss2_form`; needed only when the ``ss2`` weight is non-zero.
      ss2_target: [B, Ho, Wo] log target of the PASTED_TARGET_FORMS
        (:func:`pasted_attention_target`); needed only by those forms.
    Returns:
      dict with the computed terms among ``saol_ce, ss1, ss2, sd, gap_ce`` and
      ``total`` = sum of weight * term, all float32 scalars.
    Raises:
      ValueError: unknown weight key, an SS-2 form not in SS2_FORMS (or none)
        with a non-zero ``ss2`` weight, a non-zero weight whose term needs an
        output the model did not produce, or a pasted-target form without
        its target.
    """
    unknown = set(weights) - set(WEIGHT_TO_TERM)
    if unknown:
        raise ValueError(f"Unknown loss weight keys {sorted(unknown)}; expected {list(WEIGHT_TO_TERM)}")
    active = {name: float(weights.get(name, 0.0)) for name in WEIGHT_TO_TERM}
    active = {name: w for name, w in active.items() if w != 0.0}
    if "ss2" in active and ss2_form not in SS2_FORMS:
        raise ValueError(f"loss.ss2_form must be one of {', '.join(SS2_FORMS)}, got {ss2_form!r}")
    for name in active:
        missing = [key for key in _REQUIRED_OUTPUTS[name] if key not in outputs]
        if missing:
            raise ValueError(
                f"Loss term '{WEIGHT_TO_TERM[name]}' (weight '{name}'={active[name]}) needs model "
                f"outputs {missing}, which the model did not produce (has {sorted(outputs)})"
            )

    batch = labels_a.shape[0]
    ew = (
        jnp.ones((batch,), jnp.float32)
        if example_weight is None
        else example_weight.astype(jnp.float32)
    )
    lam = jnp.ones((batch,), jnp.float32) if lam is None else lam.astype(jnp.float32)
    if coverage is None and ("ss1" in active or "ss2" in active):
        coverage = jnp.zeros(outputs["log_spatial"].shape[:3], jnp.float32)

    terms: dict[str, jax.Array] = {}
    if "saol" in active:
        per_ex = mixed_cross_entropy(outputs["log_probs"], labels_a, labels_b, lam)
        terms["saol_ce"] = _weighted_mean(per_ex, ew)
    if "ss1" in active:
        per_ex = spatial_logit_loss(outputs["log_spatial"], labels_a, labels_b, coverage)
        terms["ss1"] = _weighted_mean(per_ex, ew)
    if "ss2" in active:
        terms["ss2"] = _ss2(outputs, labels_a, labels_b, coverage, ew, ss2_form, ss2_target)
    if "sd" in active:
        per_ex = distillation_loss(outputs["log_probs"], outputs["gap_logits"])
        terms["sd"] = _weighted_mean(per_ex, ew)
    if "gap" in active:
        log_q = jax.nn.log_softmax(outputs["gap_logits"].astype(jnp.float32), axis=-1)
        per_ex = mixed_cross_entropy(log_q, labels_a, labels_b, lam)
        terms["gap_ce"] = _weighted_mean(per_ex, ew)

    total = jnp.zeros((), jnp.float32)
    for name, w in active.items():
        total = total + w * terms[WEIGHT_TO_TERM[name]]
    terms["total"] = total
    return terms


def _ss2(
    outputs: Mapping[str, jax.Array],
    labels_a: jax.Array,
    labels_b: jax.Array,
    coverage: jax.Array,
    ew: jax.Array,
    form: str,
    target: jax.Array | None,
) -> jax.Array:
    """The batch-reduced SS-2 term of the given form."""
    if form == "renorm":
        per_ex, count = attention_loss(
            outputs["log_attention"], outputs["log_spatial"], labels_a, labels_b, coverage
        )
        return _weighted_mean(per_ex, ew, denom=jnp.sum(ew * count))
    if form == "mass_mix":
        per_ex = mass_mix_loss(outputs["log_attention"], outputs["log_probs"], labels_a, labels_b, coverage)
        return _weighted_mean(per_ex, ew)
    if target is None:
        raise ValueError(f"loss.ss2_form={form!r} needs ss2_target, the pasted maps of the un-mixed batch")
    per_ex = paste_loss(outputs["log_attention"], target)
    if form == "paste_mixed":
        # Same denominator as `paste`: each mixed example keeps exactly its `paste` term and weight.
        per_ex = mixed_only(per_ex, coverage)
    return _weighted_mean(per_ex, ew)


def topk_correct(scores: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """[B] float32, 1 where the label's score is among the k highest of scores [B, K].

    Ties count in the label's favour (rank = number of strictly higher scores).
    A row with a NaN score is never correct (NaN compares false, so it would
    otherwise rank first); -inf stays a valid log-probability.
    """
    scores = scores.astype(jnp.float32)
    label_score = _pick(scores, labels)
    higher = jnp.sum(scores > label_score[:, None], axis=-1)
    has_nan = jnp.any(jnp.isnan(scores), axis=-1)
    return ((higher < k) & ~has_nan).astype(jnp.float32)
