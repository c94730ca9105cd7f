"""saol_jax.studies.stats against scipy's t-tests and a Holm correction worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from saol_jax.studies import stats

A = np.array([19.35, 19.90, 18.80, 19.62, 20.01])
B = np.array([22.27, 22.05, 22.49, 21.80, 22.60, 22.31])


def test_welch_matches_scipy():
    result = stats.welch(A, B)
    reference = scipy.stats.ttest_ind(A, B, equal_var=False)
    assert result.difference == pytest.approx(A.mean() - B.mean())
    assert result.se == pytest.approx(math.sqrt(A.var(ddof=1) / 5 + B.var(ddof=1) / 6))
    assert result.t == pytest.approx(reference.statistic)
    assert result.df == pytest.approx(reference.df)
    assert result.p == pytest.approx(reference.pvalue)
    assert (result.n_a, result.n_b, result.reason) == (5, 6, "")


def test_paired_matches_scipy():
    b = A + np.array([2.1, 1.8, 2.4, 1.9, 2.2])
    result = stats.paired(A, b)
    reference = scipy.stats.ttest_rel(A, b)
    assert result.difference == pytest.approx(-2.08)
    assert result.t == pytest.approx(reference.statistic)
    assert result.df == 4 == reference.df
    assert result.p == pytest.approx(reference.pvalue)


def test_two_standard_errors_at_three_seeds_is_not_a_five_percent_test():
    # t = 3.0 with 3 seeds per side and equal spreads: beyond two SE, yet p > 0.05 (df = 4, critical 2.78 ...
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]) + 3.0 * math.sqrt(2.0 / 3.0)
    welch = stats.welch(a, b)
    assert welch.t == pytest.approx(-3.0) and welch.df == pytest.approx(4.0)
    assert welch.p == pytest.approx(2 * scipy.stats.t.sf(3.0, 4)) and 0.03 < welch.p < 0.05
    # ... and paired, df = 2: critical value 4.30, so t = 3 gives p near 0.1.
    d = math.sqrt(3.0) + np.array([-1.0, 0.0, 1.0])  # mean sqrt(3), SE 1 / sqrt(3): t = 3
    paired = stats.paired(d, np.zeros(3))
    assert paired.t == pytest.approx(3.0) and paired.df == 2
    assert paired.p == pytest.approx(scipy.stats.ttest_rel(d, np.zeros(3)).pvalue) and 0.09 < paired.p < 0.1
    assert not stats.significant(paired.p)


def test_a_spread_of_float_rounding_is_no_spread():
    # 10.3 - 10.1 and 10.1 - 9.9 are 0.2 but differ in their last bits: not evidence of anything.
    rounding = stats.paired([10.3, 10.1, 10.2], [10.1, 9.9, 10.0])
    assert float(np.std(np.subtract([10.3, 10.1, 10.2], [10.1, 9.9, 10.0]))) > 0.0
    assert math.isnan(rounding.p) and "no spread" in rounding.reason and not stats.significant(rounding.p)
    assert rounding.difference == pytest.approx(0.2)
    assert math.isnan(stats.welch([0.1 + 0.2, 0.3], [0.3, 0.3]).p)
    small = stats.paired([1e-6, 2e-6, 4e-6], [0.0, 0.0, 0.0])  # small values, real spread: still a test
    assert small.p > 0.0 and not math.isnan(small.p)


def test_degenerate_inputs_give_nan_with_a_reason():
    one = stats.welch([1.0], [2.0, 3.0])
    assert math.isnan(one.p) and math.isnan(one.t) and "fewer than 2" in one.reason
    assert one.difference == pytest.approx(-1.5)
    flat = stats.welch([1.0, 1.0], [1.0, 1.0])
    assert math.isnan(flat.p) and "no spread" in flat.reason
    same_shift = stats.paired([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert same_shift.difference == 1.0 and math.isnan(same_shift.p) and "no spread" in same_shift.reason
    assert "fewer than 2 pairs" in stats.paired([1.0], [2.0]).reason
    assert not stats.significant(flat.p)
    with pytest.raises(ValueError, match="one length"):
        stats.paired([1.0, 2.0], [1.0, 2.0, 3.0])


def test_holm_by_hand():
    # m = 4; sorted p 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06 (kept monotone), 0.04 -> 0.06.
    adjusted = stats.holm([0.03, 0.01, 0.04, 0.02])
    assert adjusted == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # Capped at 1; a NaN stays NaN and does not count in m (m = 2 here).
    adjusted = stats.holm([0.6, math.nan, 0.001])
    assert adjusted[0] == 0.6 and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.002)
    assert stats.holm([0.5, 0.7, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert stats.holm([]).shape == (0,)


def test_mean_std():
    assert stats.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    mean, std = stats.mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)
    with pytest.raises(ValueError):
        stats.mean_std([])
