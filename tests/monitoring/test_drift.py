"""The two-sample tests and the verdict they give together, on arrays with a known answer."""

import numpy as np
import pytest

from monitoring import drift


def test_the_false_alarm_rate_is_shared_among_the_tests():
    rng = np.random.default_rng(0)
    same = {"a": rng.normal(size=80), "b": rng.normal(size=80), "v": rng.normal(size=(40, 5))}
    verdict = drift.compare(same, {k: rng.normal(size=v.shape) for k, v in same.items()}, 0.06,
                            vectors=frozenset({"v"}))
    assert [t.threshold for t in verdict.tests] == [pytest.approx(0.02)] * 3
    assert [t.method for t in verdict.tests] == ["Kolmogorov-Smirnov", "Kolmogorov-Smirnov", "MMD permutation"]


def test_a_quantity_that_moved_makes_the_verdict_drift_and_is_named():
    rng = np.random.default_rng(1)
    window = {"still": rng.normal(size=300), "moved": rng.normal(1.0, size=300)}
    reference = {"still": rng.normal(size=300), "moved": rng.normal(size=300)}
    verdict = drift.compare(window, reference, 0.05)
    assert verdict.drift and verdict.moved() == ["moved"]
    assert verdict.line().startswith("drift: moved moved")
    test = verdict.tests[1].to_json()
    assert set(test) >= {"name", "statistic", "threshold", "p_value", "drift"} and test["drift"] is True


def test_a_quantity_missing_or_too_short_on_either_side_is_not_tested():
    verdict = drift.compare({"a": np.ones(10), "b": np.ones(1)}, {"a": np.zeros(10), "c": np.ones(10)}, 0.05)
    assert [t.name for t in verdict.tests] == ["a"] and verdict.tests[0].threshold == 0.05


def test_the_mmd_test_finds_a_small_shift_in_many_dimensions_that_no_single_one_shows():
    rng = np.random.default_rng(2)
    window, reference = rng.normal(0.1, size=(200, 128)), rng.normal(size=(200, 128))
    _, p_value = drift.mmd_test(window, reference)
    assert p_value == pytest.approx(1 / (drift.PERMUTATIONS + 1))  # none of the permutations comes near it
    # each dimension alone, at the same level shared among them, moved by nothing it can tell
    assert min(drift.ks_test(window[:, d], reference[:, d])[1] for d in range(128)) > 0.05 / 128


def test_the_mmd_test_alarms_at_about_its_level_on_samples_of_one_distribution():
    rng = np.random.default_rng(3)
    alarms = sum(drift.mmd_test(rng.normal(size=(30, 4)), rng.normal(size=(25, 4)), permutations=199,
                                seed=trial)[1] < 0.1 for trial in range(200))
    assert 8 <= alarms <= 32  # 20 expected; 8..32 holds with probability > 0.99


def test_ks_never_alarms_more_than_its_level_on_whole_pixel_sizes():
    rng = np.random.default_rng(4)
    alarms = sum(drift.ks_test(rng.integers(120, 130, 200), rng.integers(120, 130, 100))[1] < 0.05
                 for _ in range(200))
    assert alarms <= 17  # at most 10 expected (ties make it conservative)


def test_a_false_alarm_rate_outside_zero_and_one_is_refused():
    from monitoring.settings import MonitorSettings

    with pytest.raises(ValueError, match="false_alarm_rate"):
        MonitorSettings(false_alarm_rate=1.5)


def test_the_lowest_false_alarm_rate_taken_still_lets_the_features_test_alarm_on_the_most_distant_window():
    """Below the floor, each test's share of the rate is below the smallest p-value the features' permutation test
    can give: it could never alarm. At the floor, a window far from the reference gets that smallest p-value,
    which meets its share."""
    from monitoring import measure
    from monitoring.settings import MIN_FALSE_ALARM_RATE, PERMUTATIONS, TESTS, MonitorSettings

    assert TESTS == len(measure.SIZES + measure.SEEN)
    with pytest.raises(ValueError, match="false_alarm_rate must be above 0.006 and below 1"):
        MonitorSettings(false_alarm_rate=MIN_FALSE_ALARM_RATE)
    rng = np.random.default_rng(0)
    far = {measure.FEATURES: rng.normal(5, 1, (40, 8))}
    near = {measure.FEATURES: rng.normal(0, 1, (40, 8))}
    _, p_value = drift.mmd_test(far[measure.FEATURES], near[measure.FEATURES])
    assert p_value == 1 / (PERMUTATIONS + 1)
    lowest = MonitorSettings(false_alarm_rate=MIN_FALSE_ALARM_RATE * 1.01).false_alarm_rate
    # one test here: its share is the whole rate; with all six, each gets a sixth, which the floor keeps above p
    assert drift.share(lowest, TESTS) > p_value >= drift.share(MIN_FALSE_ALARM_RATE, TESTS)
    # the features' test alone, given its share of the lowest rate among six: it alarms on the distant window
    assert drift.compare(far, near, drift.share(lowest, TESTS), measure.VECTORS).drift
