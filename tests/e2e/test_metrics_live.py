"""Prometheus metrics scraped from the live API and the live worker: the values move as jobs run."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import metric_samples, wait_done, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def scrape(client: httpx.Client, path: str = "/metrics") -> dict[tuple, float]:
    return metric_samples(client.get(path).text)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_worker_and_api_metrics_move_as_jobs_run_yield_and_are_repredicted(stack):
    worker = httpx.Client(base_url=f"http://127.0.0.1:{stack.worker_metrics_port}", timeout=10)
    with stack.api("mlfq") as mlfq, stack.api("isrtf") as isrtf:
        worker_before, api_before = scrape(worker), scrape(mlfq)
        assert worker_before[("elis_worker_slots", ())] == 1
        # MLFQ: a long job yields its slot to a short one that arrives while it runs. Five windows: long enough
        # that polling sees it running on a busy machine (a CI run once missed a 120-token job's 4.5 s).
        long_id = mlfq.post("/v1/jobs", json={"prompt": "Tell a story.", "target_output_tokens": 250}).json()[
            "id"
        ]
        wait_until(
            lambda: mlfq.get(f"/v1/jobs/{long_id}").json()["status"] == "running", what="long job running"
        )
        # The running window holds the worker's one slot (the gauge that tells busy slots from a stalled consumer).
        wait_until(lambda: scrape(worker).get(("elis_worker_windows_in_engine", ())) == 1,
                   what="a window in the engine")
        short_id = mlfq.post("/v1/jobs", json={"prompt": "Say yes.", "target_output_tokens": 10}).json()["id"]
        # ISRTF: re-predicted after its first window.
        repredicted_id = isrtf.post("/v1/jobs", json={"prompt": "Count.", "target_output_tokens": 60}).json()[
            "id"
        ]
        jobs = [wait_done(mlfq, long_id), wait_done(mlfq, short_id), wait_done(isrtf, repredicted_id)]
        worker_after, api_after = scrape(worker), scrape(mlfq)
    assert [j["status"] for j in jobs] == ["done"] * 3
    num_windows = sum(j["num_windows"] for j in jobs)
    assert moved(worker_before, worker_after, "elis_worker_output_tokens_total") == 250 + 10 + 60
    assert moved(worker_before, worker_after, "elis_worker_window_seconds_count") == num_windows
    assert moved(worker_before, worker_after, "elis_worker_windows_total", outcome="run") == num_windows
    assert moved(worker_before, worker_after, "elis_worker_yields_total") >= 1
    assert moved(worker_before, worker_after, "elis_worker_reprediction_seconds_count") >= 1
    # the re-predictions read the prompt prior's score the API stored with each job: the worker never passes a
    # prompt through the served model itself
    assert moved(worker_before, worker_after, "elis_worker_prior_scores_total", source="carried") >= 1
    assert moved(worker_before, worker_after, "elis_worker_prior_scores_total", source="computed") == 0
    assert moved(worker_before, worker_after, "elis_worker_deliveries_total", redelivered="false") >= 4
    assert moved(worker_before, worker_after, "elis_worker_batch_occupancy_count") > 0
    assert worker_after[("elis_worker_output_tokens_per_second", ())] > 0
    assert worker_after[("elis_worker_windows_in_engine", ())] == 0  # every window came back
    assert moved(api_before, api_after, "elis_jobs", status="done") == 3
    assert moved(api_before, api_after, "elis_job_completion_seconds_count", policy="mlfq") == 2
    assert moved(api_before, api_after, "elis_job_queuing_delay_seconds_count", policy="isrtf") == 1
