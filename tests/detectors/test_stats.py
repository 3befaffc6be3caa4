"""Trend statistics against textbook data and hand-computed values."""

from __future__ import annotations

import math

import pytest

from kvmtop.detectors.stats import (
    RollingMedian,
    mann_kendall,
    median,
    norm_ppf,
    resistant_slope,
    theil_sen,
)

# R `datasets::Nile`: annual flow of the Nile at Aswan, 1871-1970, 10^8 m^3 (Cobb 1978;
# Durbin & Koopman). Textbook series for trend tests; mean 919.35, min 456 (1913).
NILE = [
    1120, 1160, 963, 1210, 1160, 1160, 813, 1230, 1370, 1140, 995, 935, 1110, 994, 1020,
    960, 1180, 799, 958, 1140, 1100, 1210, 1150, 1250, 1260, 1220, 1030, 1100, 774, 840,
    874, 694, 940, 833, 701, 916, 692, 1020, 1050, 969, 831, 726, 456, 824, 702, 1120,
    1100, 832, 764, 821, 768, 845, 864, 862, 698, 845, 744, 796, 1040, 759, 781, 865, 845,
    944, 984, 897, 822, 1010, 771, 676, 649, 846, 812, 742, 801, 1040, 860, 874, 848, 890,
    744, 749, 838, 1050, 918, 986, 797, 923, 975, 815, 1020, 906, 901, 1170, 912, 746, 919,
    718, 714, 740,
]  # fmt: skip


def test_nile_is_the_textbook_series() -> None:
    assert len(NILE) == 100 and sum(NILE) / 100 == 919.35 and min(NILE) == 456


def test_mann_kendall_hamed_rao_on_nile() -> None:
    # Reference: pymannkendall 1.4.3 hamed_rao_modification_test(Nile) (R modifiedmk
    # mmkh method): s = -1387, var_s = 241565.3569, z = -2.819979, p = 0.0048027.
    r = mann_kendall(NILE)
    assert r.s == -1387
    assert r.var_s == pytest.approx(241565.3569, abs=1e-3)
    assert r.z == pytest.approx(-2.819979, abs=1e-6)
    assert r.p == pytest.approx(0.0048027, abs=1e-7)
    assert r.tau == pytest.approx(-0.280202, abs=1e-6)
    assert r.correction > 2.0  # the flows are autocorrelated: variance more than doubles


def test_mann_kendall_by_hand() -> None:
    # 1..5: S = 10 (all 10 pairs rise); Var = 5·4·15/18 = 16.667; z = 9/√16.667.
    r = mann_kendall([1, 2, 3, 4, 5])
    assert r.s == 10 and r.tau == 1.0
    assert r.var_s == pytest.approx(50 / 3)
    assert r.z == pytest.approx(9 / math.sqrt(50 / 3))
    assert r.p == pytest.approx(0.0274863, abs=1e-6)
    # Residuals after Sen detrending are constant: no autocorrelation to correct.
    assert r.correction == 1.0


def test_mann_kendall_ties() -> None:
    # Ties: groups {1,1},{2,2},{4,4} each remove 2·1·9 = 18 from n(n−1)(2n+5) = 1656.
    r = mann_kendall([1, 1, 2, 2, 3, 5, 4, 4, 6])
    assert r.s == 29
    assert r.var_s == pytest.approx((1656 - 54) / 18)
    assert r.p == pytest.approx(0.0029975, abs=1e-7)


def test_mann_kendall_flat_and_short() -> None:
    r = mann_kendall([3.0] * 10)
    assert (r.s, r.z, r.p) == (0, 0.0, 1.0)
    with pytest.raises(ValueError):
        mann_kendall([1, 2])


def test_theil_sen_on_nile_matches_sen_interval() -> None:
    # Reference: scipy.stats.theilslopes(Nile, range(100), 0.95) = slope -2.6,
    # intercept 1022.2, 95 % CI (-3.627907, -1.428571).
    r = theil_sen(list(range(100)), NILE)
    assert r.slope == pytest.approx(-2.6)
    assert r.intercept == pytest.approx(1022.2)
    assert r.low == pytest.approx(-3.627906976744186)
    assert r.high == pytest.approx(-1.4285714285714286)


def test_theil_sen_by_hand_with_ties() -> None:
    # Slopes of y = (1,1,2,2,3,5,4,4,6) over x = 0..8: median 0.5; 95 % bounds are the
    # order statistics at (36 ∓ 1.96·√89)/2 → ranks 9 and 28: 0.4 and 0.8.
    r = theil_sen(list(range(9)), [1, 1, 2, 2, 3, 5, 4, 4, 6])
    assert (r.slope, r.intercept, r.low, r.high) == pytest.approx((0.5, 1.0, 0.4, 0.8))


def test_theil_sen_robust_to_an_outlier_and_uneven_x() -> None:
    x = [0, 1, 2, 5, 6, 10]
    y = [2 * v + 1 for v in x]
    y[3] = 1000
    r = theil_sen(x, y)
    assert r.slope == pytest.approx(2.0)
    assert r.low <= 2.0 <= r.high
    with pytest.raises(ValueError):
        theil_sen([1, 1], [1, 2])
    with pytest.raises(ValueError):
        theil_sen([1, 2], [1])


def test_norm_ppf_known_quantiles() -> None:
    assert norm_ppf(0.975) == pytest.approx(1.959963985, abs=1e-9)
    assert norm_ppf(0.5) == pytest.approx(0.0, abs=1e-12)
    assert norm_ppf(0.005) == pytest.approx(-2.575829304, abs=1e-9)
    with pytest.raises(ValueError):
        norm_ppf(1.0)


def test_median() -> None:
    assert median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_resistant_slope_by_hand() -> None:
    # Thirds of x = 0..8: left medians (1, y=2), right medians (7, y=14) → 12/6 = 2;
    # the outlier at x=4 (middle third) and y=99 at x=8 do not move it.
    x = list(range(9))
    y = [2 * v for v in x]
    y[4], y[8] = -50, 99
    assert resistant_slope(x, y) == 2.0
    assert resistant_slope([1, 2], [1, 2]) is None
    assert resistant_slope([1, 1, 1], [1, 2, 3]) is None


def test_rolling_median_expires_by_time() -> None:
    rm = RollingMedian(span_s=10)
    assert rm.median() is None and rm.covered_s == 0.0
    for t, v in [(0, 5.0), (2, 1.0), (4, 3.0), (6, 100.0)]:
        rm.add(t, v)
    assert rm.median() == 4.0 and len(rm) == 4 and rm.covered_s == 6
    rm.add(13, 7.0)  # drops t=0 and t=2
    assert len(rm) == 3 and rm.median() == 7.0
