"""The length predictor on the live stack: SSJF predicts once at admission, ISRTF re-predicts at window ends (every
window here: the e2e stack samples every window it would otherwise skip)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import wait_done, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def with_admission_prediction(client, job_id: str) -> dict:
    """The job once its admission prediction is stored: with a slot free the API queues a job first and stores
    its prediction after (elis.api.deferred), so a short job can end before it."""
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["initial_prediction"] is not None, timeout_s=30,
               what="the deferred admission prediction")
    return client.get(f"/v1/jobs/{job_id}").json()


def test_an_isrtf_job_records_a_prediction_after_every_window_it_did_not_finish_in(stack):
    with stack.api("isrtf") as client:
        accepted = client.post("/v1/jobs", json={"prompt": "Describe the water cycle.", "target_output_tokens": 160})
        wait_done(client, accepted.json()["id"])
        job = with_admission_prediction(client, accepted.json()["id"])
    windows = job["windows"]
    assert len(windows) == 4
    # The worker read the prediction at the first window end if it had come by then (tests/unit/test_window_task.py).
    assert windows[0]["prediction_before"] in (None, job["initial_prediction"])
    for window in windows[:-1]:  # every window after which the job went on
        assert window["prediction_after"] is not None and 0 <= window["prediction_after"] <= 160
    assert windows[-1]["prediction_after"] is None  # it finished: nothing left to predict
    for earlier, later in zip(windows, windows[1:]):
        assert later["prediction_before"] == earlier["prediction_after"]
    assert job["latest_prediction"] == windows[-2]["prediction_after"]


def test_an_sjf_job_is_admitted_with_a_prompt_only_prediction_and_runs_to_completion(stack):
    with stack.api("sjf") as client:
        accepted = client.post("/v1/jobs", json={"prompt": "Name a colour.", "target_output_tokens": 120}).json()
        wait_done(client, accepted["id"])
        job = with_admission_prediction(client, accepted["id"])
    assert job["policy"] == "sjf" and job["initial_prediction"] is not None
    assert all(w["prediction_after"] is None for w in job["windows"])  # SSJF never re-predicts
    assert all(w["priority"] is None for w in job["windows"])  # and never yields
