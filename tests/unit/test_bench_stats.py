"""bench.stats: the paired success difference and the throughput ratio, against closed forms."""

import math

import numpy as np
import pytest

from bench.stats import paired_difference, speedup, throughput_ratio


def test_paired_difference_closed_form():
    a = [1, 1, 0, 1, 0, 1]
    b = [1, 0, 0, 1, 1, 0]
    d = np.subtract(b, a)
    r = paired_difference(a, b)
    half = 2.571 * d.std(ddof=1) / math.sqrt(len(d))  # t(5) quantile
    assert r["n"] == 6 and r["mean"] == pytest.approx(d.mean())
    assert r["ci95"] == pytest.approx((d.mean() - half, d.mean() + half))
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1, 0], [1])


def test_throughput_ratio_pools_actions_not_episodes():
    # AR: one 1-action episode at 10 ms, one 3-action episode at 20 ms -> mean 17.5 ms per action.
    # Method: 5 ms, then 10 ms -> mean 8.75 ms: ratio 2.0 (the mean of the two episodes' ratios is also 2;
    # a method that is fast only on the short episode is not)
    r = throughput_ratio([[10.0], [20.0, 20.0, 20.0]], [[5.0], [10.0, 10.0, 10.0]])
    assert r["ratio"] == pytest.approx(2.0) and r["episodes"] == 2
    assert r["ci95"][0] == pytest.approx(2.0) and r["ci95"][1] == pytest.approx(2.0)
    r = throughput_ratio([[10.0], [20.0, 20.0, 20.0]], [[1.0], [20.0, 20.0, 20.0]])
    assert r["ratio"] == pytest.approx(17.5 / (61.0 / 4))
    assert r["ci95"][0] <= r["ratio"] <= r["ci95"][1]


def test_throughput_ratio_sees_what_the_median_of_medians_misses():
    # bimodal method steps: per episode 3 fast (5 ms) and 2 slow (20 ms) steps -> the per-episode median is
    # the fast mode, 5 ms, so the median-of-medians speedup says 4x; the mean latency is 11 ms: 20/11
    ar = [[20.0] * 5] * 10
    m = [[5.0, 5.0, 5.0, 20.0, 20.0]] * 10
    assert speedup([np.median(e) for e in ar], [np.median(e) for e in m])["median"] == pytest.approx(4.0)
    assert throughput_ratio(ar, m)["ratio"] == pytest.approx(20.0 / 11.0)


def test_throughput_ratio_errors():
    with pytest.raises(ValueError, match="same number"):
        throughput_ratio([[1.0]], [])
