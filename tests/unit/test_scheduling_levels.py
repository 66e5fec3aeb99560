"""Score -> broker level, calibration, and the remaining-length targets it is calibrated on."""

from __future__ import annotations

import pytest

from elis.scheduling import AGED_SCORE, PriorityLevels, calibrate_levels, remaining_length_targets


def test_lower_scores_get_higher_broker_levels_and_aged_jobs_the_top_level():
    levels = PriorityLevels((10.0, 100.0, 1000.0))
    assert levels.num_levels == 5
    assert [levels.level(s) for s in (AGED_SCORE, 0, 9.9, 10, 99, 100, 5000)] == [4, 3, 3, 2, 2, 1, 0]


def test_quantile_edges_split_the_training_scores_into_equal_shares():
    levels = PriorityLevels.from_quantiles(range(1, 101), num_levels=6)
    assert levels.edges == pytest.approx((20.8, 40.6, 60.4, 80.2))


def test_calibration_falls_back_to_log_spaced_edges_without_enough_data():
    assert calibrate_levels(10, None) == PriorityLevels.log_spaced(10)
    assert calibrate_levels(10, [5.0] * 100) == PriorityLevels.log_spaced(10)
    assert calibrate_levels(5, range(1000)) == PriorityLevels.from_quantiles(range(1000), 5)


def test_remaining_length_targets_hold_one_target_per_window_boundary():
    assert remaining_length_targets([120, 50, 7], 50) == [120, 70, 20, 50, 7]
