"""The API's /metrics, read from the real PostgreSQL: the values move as jobs are queued and finish."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from elis.api.app import create_app
from tests.integration.test_batch_api import finish

pytestmark = pytest.mark.integration


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_jobs_by_status_queue_depth_and_jct_histograms_follow_the_jobs(settings):
    with TestClient(create_app(settings)) as client:
        empty = scrape(client)
        assert empty[("elis_jobs", (("status", "queued"),))] == 0
        assert empty[("elis_metrics_database_up", ())] == 1
        ids = [
            client.post("/v1/jobs", json={"prompt": f"p{i}", "max_tokens": 8}).json()["id"] for i in range(2)
        ]
        queued = scrape(client)
        assert queued[("elis_jobs", (("status", "queued"),))] == 2
        top = str(settings.num_priority_levels - 2)  # MLFQ admits at the highest non-aged level
        assert queued[("elis_queue_depth", (("level", top),))] == 2
        finish(settings, ids[0], "ok", 3)
        after = scrape(client)
    assert after[("elis_jobs", (("status", "queued"),))] == 1
    assert after[("elis_jobs", (("status", "done"),))] == 1
    assert after[("elis_job_completion_seconds_count", (("policy", "mlfq"),))] == 1
    assert after[("elis_job_completion_seconds_bucket", (("le", "+Inf"), ("policy", "mlfq")))] == 1
    assert after[("elis_job_queuing_delay_seconds_count", (("policy", "mlfq"),))] == 1
    assert after[("elis_job_completion_seconds_sum", (("policy", "mlfq"),))] > 0


def test_a_scrape_answers_when_the_database_is_away(settings):
    broken = settings.model_copy(update={"database_url": "postgresql+psycopg2://postgres@127.0.0.1:1/none"})
    with TestClient(create_app(broken)) as client:
        assert scrape(client)[("elis_metrics_database_up", ())] == 0
