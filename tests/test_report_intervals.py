"""The report's step-time ratio intervals, on data whose answer is known.

Hand-sized inputs pin the arithmetic (medians, geometric means, the pair-level resampling);
synthetic measurements with a known true ratio check what the interval is for: tight on a
repeated pair with little noise, crossing 1 when the noise swamps the difference, and
covering the true ratio about as often as it claims.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from protolab.report import Interval, Ratio, ratio_interval


def _noisy(rng: np.random.Generator, ms: float, sigma: float, n: int) -> list[float]:
    """``n`` per-epoch step times around ``ms`` with log-normal noise of ``sigma``."""
    return [float(v) for v in ms * np.exp(sigma * rng.standard_normal(n))]


def _repeated(
    rng: np.random.Generator, a_ms: float, b_ms: float, sigma: float, k: int, epochs: int
) -> list[tuple[list[float], list[float]]]:
    return [(_noisy(rng, a_ms, sigma, epochs), _noisy(rng, b_ms, sigma, epochs)) for _ in range(k)]


def test_one_measurement_is_the_ratio_of_medians_without_an_interval() -> None:
    r = ratio_interval([[([2.0], [4.0])]])
    assert r.value == pytest.approx(0.5)
    assert r.interval is None and not r.clear and not r.unclear
    assert (r.n_pairs, r.n_measurements) == (1, 1)
    assert r.cell() == "0.5"
    assert "single measurement, no interval" in r.compare_text("a", "b")


def test_epoch_medians_and_the_interval_stay_within_what_resampling_can_give() -> None:
    # medians 4 and 2: ratio 2; a resampled median of a lies in [2, 6], of b in [1, 3]
    r = ratio_interval([[([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])]], n_boot=4000)
    assert r.value == pytest.approx(2.0)
    assert r.interval is not None
    assert 2.0 / 3.0 <= r.interval.low <= 2.0 <= r.interval.high <= 6.0
    assert r.interval.level == 0.95


def test_pairs_are_resampled_and_averaged_on_the_log_scale() -> None:
    # One pair 2x faster, one 2x slower, one value each: the geometric mean is exactly 1.
    # Resampling the 2 pairs gives 0.5 (both the first), 1 (one each) or 2 (both the
    # second), with probabilities 1/4, 1/2, 1/4: the 95 % interval is exactly [0.5, 2].
    r = ratio_interval([[([1.0], [2.0])], [([4.0], [2.0])]], n_boot=4000)
    assert r.value == pytest.approx(1.0)
    assert r.interval == Interval(pytest.approx(0.5), pytest.approx(2.0))
    assert r.unclear and "no clear difference" in r.compare_text("a", "b")


def test_repeats_of_a_pair_average_within_the_pair_first() -> None:
    # pair 1: repeats 0.5 and 0.5; pair 2: one measurement at 2. Pairs weigh the same, so
    # the study's ratio is sqrt(0.5 * 2) = 1, not the mean over the three measurements.
    r = ratio_interval([[([1.0], [2.0]), ([1.0], [2.0])], [([4.0], [2.0])]])
    assert r.value == pytest.approx(1.0)
    assert (r.n_pairs, r.n_measurements) == (2, 3)


def test_inverting_swaps_and_inverts_the_interval() -> None:
    r = Ratio(0.5, Interval(0.4, 0.625), 3, 3)
    inv = r.inverted()
    assert inv.value == pytest.approx(2.0)
    assert inv.interval == Interval(pytest.approx(1.6), pytest.approx(2.5))
    assert r.clear and inv.clear
    assert r.cell() == "0.5 [0.4-0.625]"
    assert r.compare_text("fast", "slow") == (
        "fast is 2x faster per step than slow (95% CI 1.6-2.5x; 3 pairs)"
    )
    assert inv.compare_text("slow", "fast") == (
        "slow is 2x slower per step than fast (95% CI 1.6-2.5x; 3 pairs)"
    )


def test_a_repeated_pair_with_small_spread_is_within_ten_percent() -> None:
    """The issue's target: K=5 repeats give an interval within +-10 % of the median."""
    rng = np.random.default_rng(11)
    pair = _repeated(rng, a_ms=10.0, b_ms=20.0, sigma=0.05, k=5, epochs=5)
    r = ratio_interval([pair])
    assert r.interval is not None and r.n_measurements == 5
    assert r.interval.contains(0.5)
    assert r.value * 0.9 <= r.interval.low and r.interval.high <= r.value * 1.1
    assert r.clear and r.compare_text("a", "b").startswith("a is 1.98x faster per step than b")


def test_large_noise_crosses_one_and_says_no_clear_difference() -> None:
    rng = np.random.default_rng(5)
    pair = _repeated(rng, a_ms=10.0, b_ms=11.0, sigma=0.6, k=3, epochs=3)
    r = ratio_interval([pair])
    assert r.interval is not None and r.interval.contains(1.0)
    assert r.unclear and r.cell().endswith(" ~")
    assert r.compare_text("a", "b").startswith("no clear difference between a and b")


def test_the_same_data_gives_the_same_interval() -> None:
    rng = np.random.default_rng(3)
    pairs = [_repeated(rng, 10.0, 12.0, 0.2, k=2, epochs=4) for _ in range(3)]
    assert ratio_interval(pairs) == ratio_interval(pairs)
    assert ratio_interval(pairs, seed=1) != ratio_interval(pairs, seed=2)


def test_the_interval_covers_the_true_ratio_about_as_often_as_it_claims() -> None:
    rng = np.random.default_rng(2024)
    true = 0.8
    hits = 0
    trials = 200
    for _ in range(trials):
        pairs = [_repeated(rng, 10.0 * true, 10.0, 0.15, k=1, epochs=5) for _ in range(6)]
        interval = ratio_interval(pairs, n_boot=500, seed=int(rng.integers(1 << 30))).interval
        assert interval is not None
        hits += interval.contains(true)
    assert hits / trials >= 0.85, hits  # percentile bootstrap: near 95 %, a little under


@pytest.mark.parametrize(
    "pairs",
    [[], [[]], [[([1.0], [])]], [[([0.0], [1.0])]], [[([1.0], [math.nan])]]],
)
def test_bad_input_is_refused(pairs: list[list[tuple[list[float], list[float]]]]) -> None:
    with pytest.raises(ValueError):
        ratio_interval(pairs)
