"""Pure logic of the window task: when a job ends, and how a prediction is bounded."""

from __future__ import annotations

from datetime import datetime, timezone

from elis.tasks.contracts import FinishReason, SamplingSettings, WindowOutput
from elis.tasks.windows import JobSnapshot, clip_prediction, finish_reason, job_view

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def snapshot(**overrides) -> JobSnapshot:
    fields = dict(id="j", policy="isrtf", prompt="p", prompt_ids=[1], generated_ids=[], max_tokens=100,
                  sampling=SamplingSettings(), next_window=0, arrival_at=T0, enqueued_at=T0, latest_prediction=None,
                  initial_prediction=None, true_output_tokens=None, service_s=0.0)
    return JobSnapshot(**{**fields, **overrides})


def going_on(num: int = 50) -> WindowOutput:
    return WindowOutput(new_ids=[0] * num, finished=False)


def test_a_full_window_below_max_tokens_goes_on():
    assert finish_reason(going_on(), [0] * 50, "text", snapshot()) == (None, "text")


def test_reaching_max_tokens_ends_the_job_with_reason_length():
    assert finish_reason(going_on(), [0] * 100, "text", snapshot()) == ("length", "text")


def test_an_engine_ending_is_reported_with_its_reason():
    out = WindowOutput(new_ids=[0] * 3, finished=True, reason=FinishReason.EOS)
    assert finish_reason(out, [0] * 3, "abc", snapshot())[0] == "eos"


def test_a_stop_string_straddling_a_window_boundary_ends_the_job_and_is_cut_from_the_text():
    job = snapshot(sampling=SamplingSettings(stop=("END",)))
    # "EN" closed the previous window and "D" opened this one: only the whole text shows the stop string.
    assert finish_reason(going_on(), [0] * 60, "story text END more", job) == ("stop", "story text ")


def test_forced_length_jobs_ignore_stop_strings():
    job = snapshot(sampling=SamplingSettings(stop=("END",), force_length=True))
    assert finish_reason(going_on(), [0] * 60, "x END", job) == (None, "x END")


def test_predictions_are_bounded_by_the_tokens_the_job_may_still_generate():
    job = snapshot(max_tokens=100)
    assert clip_prediction(500.0, job, 60) == 40.0
    assert clip_prediction(-3.0, job, 60) == 0.0
    assert clip_prediction(None, job, 60) is None


def test_the_policy_view_carries_the_true_remaining_length_when_a_trace_knows_it():
    view = job_view(snapshot(true_output_tokens=120), 50, 30.0, 1.5, T0)
    assert (view.num_generated, view.predicted_remaining, view.true_remaining, view.service_time) == (50, 30.0, 70, 1.5)
    assert job_view(snapshot(), 50, None, 0.0, T0).true_remaining is None


def test_the_policy_view_of_a_job_that_has_not_run_carries_its_prompt_to_prefill():
    job = snapshot()
    assert job_view(job, 0, 30.0, 0.0, T0).prefill_tokens == len(job.prompt_ids) > 0
    assert job_view(job, 50, 30.0, 1.5, T0).prefill_tokens == 0  # resumed: the prefix cache holds its context


def test_a_forced_job_below_its_cap_ends_at_its_known_length_but_predictions_clip_at_the_cap():
    # A replay of a natural job that stopped by itself after 70 tokens, under max_tokens 512: it generates 70,
    # ends as the natural job did (eos), and its predictions are clipped at the cap, never at the answer.
    job = snapshot(max_tokens=512, true_output_tokens=70, sampling=SamplingSettings(force_length=True))
    assert job.token_budget == 70
    assert finish_reason(going_on(), [0] * 50, "t", job) == (None, "t")
    assert finish_reason(going_on(20), [0] * 70, "t", job) == ("eos", "t")
    assert clip_prediction(300.0, job, 50) == 300.0  # not 20: the remaining known length stays unknown
    at_cap = snapshot(max_tokens=512, true_output_tokens=512, sampling=SamplingSettings(force_length=True))
    assert finish_reason(going_on(12), [0] * 512, "t", at_cap) == ("length", "t")
    assert snapshot(max_tokens=100, true_output_tokens=70).token_budget == 100  # known, not forced: natural run


def test_only_a_greedy_output_that_loops_has_a_known_remaining_length():
    from elis.tasks.windows import known_remaining

    loop = "He sells 8 chickens for $4 each. " * 6  # the numbers masked, a period of 33 characters
    prose = "".join(f"Step {i}: the farmer counts his eggs and writes down a different sentence each time. "[i % 7:]
                    for i in range(6))
    greedy, sampled = SamplingSettings(temperature=0.0), SamplingSettings(temperature=0.7)
    assert known_remaining(snapshot(sampling=greedy, max_tokens=512), 150, loop) == 362
    assert known_remaining(snapshot(sampling=sampled, max_tokens=512), 150, loop) is None  # sampling may leave it
    assert known_remaining(snapshot(sampling=greedy, max_tokens=512), 150, prose) is None
    assert known_remaining(snapshot(sampling=greedy, max_tokens=512), 600, loop) == 0  # never below nothing left
