"""Statistics of a study over seeds: mean ± std, Welch's and the paired t-test, Holm's correction.

Pure functions of numpy arrays (one value per seed). A t-test that cannot be
computed (fewer than two values on a side, or no spread at all) does not raise:
its t and p are NaN and `reason` says why, so a table can show the row and
never call it significant. Mismatched paired inputs are a programming error
and raise ValueError.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

# A difference is called significant only at a (corrected) two-sided p below this.
ALPHA = 0.05
# Seeds per side that a headline comparison needs; fewer gets a warning.
MIN_SEEDS = 5


@dataclasses.dataclass(frozen=True)
class TTest:
    """A two-sided t-test of mean(a) - mean(b).

    `difference` is mean(a) - mean(b) (for a paired test, the mean of a - b),
    `se` its standard error, `t` = difference / se, `df` the degrees of
    freedom, `p` the two-sided p-value; `n_a` and `n_b` the values per side.
    `reason` is empty, or why t and p are NaN.
    """

    difference: float
    se: float
    t: float
    df: float
    p: float
    n_a: int
    n_b: int
    reason: str = ""


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for a single value) of `values` [n]."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_std of no values")
    std = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
    return float(np.mean(values)), std


# A spread below this fraction of the values' magnitude is float64 rounding, not variation: differences
# of counts that are equal in every seed (0.2 = 10.3 - 10.1 = 10.1 - 9.9) differ in their last bits.
ROUNDING = 1e-12


def _test(difference: float, se: float, df: float, n_a: int, n_b: int, scale: float) -> TTest:
    """t and its two-sided p from the t distribution with `df` degrees of freedom; NaN where `se` is
    no more than the rounding of values of magnitude `scale`."""
    if not se > ROUNDING * max(scale, 1.0):
        return TTest(difference, 0.0, math.nan, math.nan, math.nan, n_a, n_b,
                     "no spread: every difference is the same")
    t = difference / se
    p = float(2.0 * scipy.stats.t.sf(abs(t), df))
    return TTest(difference, se, t, df, p, n_a, n_b)


def welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TTest:
    """Welch's t-test of two independent samples a [n_a], b [n_b] (e.g. two rungs' seeds).

    df is the Welch–Satterthwaite approximation.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n_a, n_b = a.size, b.size
    if n_a < 2 or n_b < 2:
        return TTest(_mean_or_nan(a) - _mean_or_nan(b), math.nan, math.nan, math.nan, math.nan, n_a, n_b,
                     "fewer than 2 values on a side")
    va, vb = np.var(a, ddof=1) / n_a, np.var(b, ddof=1) / n_b
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)) if se > 0.0 else math.nan
    return _test(float(a.mean() - b.mean()), se, float(df), n_a, n_b, _magnitude(a, b))


def paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TTest:
    """Paired t-test of a [n] against b [n], the i-th values from the same run (e.g. a run's two outputs).

    df = n - 1.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D arrays of one length, got shapes {a.shape} and {b.shape}")
    n = a.size
    d = a - b
    if n < 2:
        return TTest(_mean_or_nan(d), math.nan, math.nan, math.nan, math.nan, n, n, "fewer than 2 pairs")
    return _test(float(d.mean()), float(np.std(d, ddof=1) / math.sqrt(n)), float(n - 1), n, n, _magnitude(a, b))


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _magnitude(a: np.ndarray, b: np.ndarray) -> float:
    return float(max(np.max(np.abs(a)), np.max(np.abs(b))))


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values [m] of one family of tests p [m].

    The k-th smallest p (k = 0, 1, ...) is multiplied by (m' - k), made
    non-decreasing in that order and capped at 1; rejecting where the adjusted
    p < alpha controls the family-wise error rate at alpha. NaN p-values (tests
    that could not be computed) stay NaN and do not count in m'.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for k, index in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[index]))
        adjusted[index] = running
    return adjusted


def significant(p_adjusted: float) -> bool:
    """Whether a (corrected) p-value is below ALPHA; NaN never is."""
    return bool(p_adjusted < ALPHA)
