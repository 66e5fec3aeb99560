"""The engine cost profile and the prediction-error models."""

from __future__ import annotations

import json

import pytest

from elis.simulator.engine_profile import EngineProfile
from elis.simulator.length_models import Exact, LognormalNoise, RecordedErrors, make_length_model


def test_decode_step_time_interpolates_between_measured_batch_sizes_and_extrapolates_past_them():
    profile = EngineProfile({1: 0.02, 4: 0.026, 8: 0.034})
    assert profile.decode_step(1) == 0.02
    assert profile.decode_step(2) == pytest.approx(0.022)
    assert profile.decode_step(6) == pytest.approx(0.030)
    assert profile.decode_step(12) == pytest.approx(0.042)
    assert profile.step_table(3)[1:] == [profile.decode_step(b) for b in (1, 2, 3)]


def test_the_embedded_default_profile_is_a_measurement_of_a_real_engine():
    profile = EngineProfile.load()
    assert "measured" in profile.source
    assert profile.decode_step(32) > profile.decode_step(1) > 0  # a bigger batch takes a longer step
    assert profile.prefill_s_per_token > 0 and profile.window_overhead_s > 0 and profile.prefix_cache_tokens > 0


def test_a_profile_file_overrides_the_default(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"source": "bench", "decode_step_s": {"1": 0.5}, "prefill_s_per_token": 0.001,
                                "window_overhead_s": 0.2}))
    profile = EngineProfile.load(path)
    assert (profile.decode_step(7), profile.prefill_s_per_token, profile.window_overhead_s) == (0.5, 0.001, 0.2)


def test_invalid_profiles_are_rejected():
    with pytest.raises(ValueError):
        EngineProfile({})
    with pytest.raises(ValueError):
        EngineProfile({0: 0.1})


def test_noise_with_zero_sigma_is_exact_and_positive_sigma_is_seeded_lognormal():
    assert isinstance(make_length_model("noise", 0.0), Exact)
    model, twin = LognormalNoise(0.5, seed=1), LognormalNoise(0.5, seed=1)
    first = [model.predict(100, k) for k in range(3)]
    again = [twin.predict(100, k) for k in range(3)]
    assert first == again and len(set(first)) == 3 and all(p > 0 for p in first)


def test_recorded_errors_sample_the_ratio_recorded_at_that_step(tmp_path):
    path = tmp_path / "errors.csv"
    path.write_text("step,true_remaining,predicted_remaining\n0,100,200\n0,50,100\n2,100,50\n")
    model = make_length_model("recorded", errors=path)
    assert model.predict(10, 0) == 20  # step 0: every ratio is 2
    assert model.predict(10, 1) == 20  # step 1 unrecorded: falls back to step 0
    assert model.predict(10, 7) == 5  # past the last step: the last recorded step (ratio 0.5)


def test_recorded_errors_read_json_and_need_usable_rows(tmp_path):
    path = tmp_path / "errors.json"
    path.write_text(json.dumps([{"step": 0, "true_remaining": 10, "predicted_remaining": 30}]))
    assert RecordedErrors.load(path).predict(5, 3) == 15
    with pytest.raises(ValueError):
        RecordedErrors([(0, 0, 5)])
    with pytest.raises(ValueError):
        make_length_model("recorded")


def test_a_profile_at_a_measured_speed_keeps_its_shape_and_takes_the_measured_costs():
    bundled = EngineProfile(decode_step_s={1: 0.02, 4: 0.03, 8: 0.05}, prefill_s_per_token=0.001,
                            window_overhead_s=0.01, prefix_cache_tokens=4096, source="bundled")
    measured = bundled.at_measured_speed(slots=4, decode_step_s=0.12, prefill_s_per_token=0.004, source="worker w1")
    assert measured.decode_step(4) == pytest.approx(0.12)
    assert [measured.decode_step(b) for b in (1, 8)] == pytest.approx([0.08, 0.20])  # 4x slower at every size
    assert (measured.prefill_s_per_token, measured.window_overhead_s, measured.source) == (0.004, 0.01, "worker w1")
    assert bundled.at_measured_speed(slots=4, decode_step_s=0.03, prefill_s_per_token=0.0,
                                     source="x").prefill_s_per_token == 0.001  # not measured: kept
    # A 4x slower engine serves fewer jobs a second, by less than 4x where prefill and overhead are unchanged.
    slow = bundled.at_measured_speed(slots=4, decode_step_s=0.12, prefill_s_per_token=0.001, source="slow")
    ratio = bundled.capacity_rps(1, 4, 50, 100, 200) / slow.capacity_rps(1, 4, 50, 100, 200)
    assert 2.0 < ratio < 4.0
    with pytest.raises(ValueError):
        bundled.at_measured_speed(slots=4, decode_step_s=0.0, prefill_s_per_token=0.0, source="unmeasured")
