"""The workers' measured engine profiles, shared through the real PostgreSQL: the API's scheduler takes the
median prefill weight of the live workers (seen by their lease heartbeat), keeps the last measured one when
none is live, and never overrides ELIS_PREFILL_WEIGHT."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from elis import clock
from elis.api.app import create_app
from elis.storage.db import session_scope
from elis.storage.profiles import forget_worker_profile, measured_prefill_weight, record_worker_profile
from elis.tasks.recovery import renew
from elis.tasks.scheduling_setup import build_scheduler, live_worker_s, refresh_scheduler
from elis.workers.startup import mark_profile_stopped

pytestmark = pytest.mark.integration


def record(url: str, worker: str, weight: float, at) -> None:
    with session_scope(url) as session:
        record_worker_profile(session, worker=worker, slots=4, prefill_s_per_token=weight * 0.03 / 4,
                              cached_prefill_s_per_token=0.0001, decode_step_s=0.03, prefill_weight=weight, now=at)


def test_the_live_workers_median_weight_counts_and_a_heartbeat_keeps_a_worker_live(settings):
    url = settings.resolved_database_url
    now = clock.now()
    stale = now - timedelta(seconds=10 * live_worker_s(settings))
    with session_scope(url) as session:
        assert measured_prefill_weight(session, seen_since=now) is None  # no worker ever measured
    record(url, "old", 0.9, stale)
    with session_scope(url) as session:  # none live: the last one measured, counted as 0 live workers
        assert measured_prefill_weight(session, seen_since=now - timedelta(seconds=60)) == (0.9, 0)
    for worker, weight in (("a", 0.05), ("b", 0.07), ("c", 0.30)):
        record(url, worker, weight, now)
    record(url, "a", 0.06, now)  # a restart re-measures: one row per worker
    with session_scope(url) as session:
        assert measured_prefill_weight(session, seen_since=now - timedelta(seconds=60)) == (0.07, 3)
    renew(settings, "old")  # the old worker's heartbeat: alive again, its weight counts
    with session_scope(url) as session:
        weight, live = measured_prefill_weight(session, seen_since=now - timedelta(seconds=60))
    assert live == 4 and weight == pytest.approx((0.07 + 0.30) / 2)  # the median of 0.06, 0.07, 0.30 and 0.9
    with session_scope(url) as session:  # a restart whose measurement failed: its old row no longer counts
        forget_worker_profile(session, worker="c")
    with session_scope(url) as session:
        assert measured_prefill_weight(session, seen_since=now - timedelta(seconds=60)) == (0.07, 3)


def test_a_worker_that_stops_leaves_the_live_median_at_once_and_stays_the_last_measured(settings):
    url = settings.resolved_database_url
    now = clock.now()
    record(url, "old", 0.16, now - timedelta(seconds=30))  # the previous stack's worker, its heartbeat still fresh
    record(url, "new", 0.13, now)
    live_since = now - timedelta(seconds=live_worker_s(settings))
    with session_scope(url) as session:
        assert measured_prefill_weight(session, seen_since=live_since) == (pytest.approx(0.145), 2)
    mark_profile_stopped(settings, "old")  # what a worker does as it stops
    with session_scope(url) as session:
        assert measured_prefill_weight(session, seen_since=live_since) == (0.13, 1)
    mark_profile_stopped(settings, "new")
    with session_scope(url) as session:  # none live: the last one measured still orders the queued jobs
        assert measured_prefill_weight(session, seen_since=live_since) == (0.13, 0)
    renew(settings, "new")  # a worker of that name started again and beats: live again
    with session_scope(url) as session:
        assert measured_prefill_weight(session, seen_since=live_since) == (0.13, 1)


def test_the_api_orders_by_the_measured_weight_unless_the_settings_set_one(settings):
    url = settings.resolved_database_url
    record(url, "w1", 0.08, clock.now())
    scheduler = build_scheduler(settings)
    assert scheduler.prefill_weight_source.startswith("bundled")
    refresh_scheduler(scheduler, settings)
    assert scheduler.prefill_weight == pytest.approx(0.08)
    assert scheduler.prefill_weight_source == "measured by 1 live worker"
    with session_scope(url) as session:  # the only worker restarted and failed to measure: the label says so
        forget_worker_profile(session, worker="w1")
    refresh_scheduler(scheduler, settings)
    assert scheduler.prefill_weight == pytest.approx(0.08)
    assert scheduler.prefill_weight_source == "measured by a worker no longer recorded"
    record(url, "gpu", 0.0, clock.now())  # a prefill too fast to time against the step: a weight of 0 counts
    refresh_scheduler(scheduler, settings)
    assert scheduler.prefill_weight == 0.0 and scheduler.prefill_weight_source == "measured by 1 live worker"
    with session_scope(url) as session:
        forget_worker_profile(session, worker="gpu")
    record(url, "w1", 0.08, clock.now())
    fixed = build_scheduler(settings.model_copy(update={"prefill_weight": 0.2}))
    refresh_scheduler(fixed, settings)
    assert fixed.prefill_weight == 0.2 and fixed.prefill_weight_source == "settings"
    with TestClient(create_app(settings.model_copy(update={"guard_refresh_s": 3600.0}))) as client:
        refresh_scheduler(client.app.state.scheduler, settings)
        stats = client.get("/v1/stats").json()
    assert stats["prefill_weight"] == pytest.approx(0.08)
    assert stats["prefill_weight_source"] == "measured by 1 live worker"


def test_compare_scales_load_to_the_speed_a_worker_last_measured(settings):
    from elis.replay.compare import measured_capacity_profile
    from elis.simulator.engine_profile import EngineProfile

    url = settings.resolved_database_url
    assert measured_capacity_profile(url) is None  # no worker ever measured: the bundled profile serves
    now = clock.now()
    record(url, "earlier", 0.1, now - timedelta(hours=1))
    with session_scope(url) as session:  # the latest start-up measurement wins, live or not
        record_worker_profile(session, worker="latest", slots=4, prefill_s_per_token=0.0021,
                              cached_prefill_s_per_token=0.0001, decode_step_s=0.131, prefill_weight=0.13, now=now)
    profile = measured_capacity_profile(url)
    assert profile.decode_step(4) == pytest.approx(0.131) and profile.prefill_s_per_token == 0.0021
    assert "worker latest" in profile.source and "131 ms a decode step at 4 slots" in profile.source
    bundled = EngineProfile.load()
    shape = bundled.decode_step(1) / bundled.decode_step(4)
    assert profile.decode_step(1) / profile.decode_step(4) == pytest.approx(shape)  # the bundled shape, scaled
    assert measured_capacity_profile("postgresql+psycopg2://postgres@127.0.0.1:1/none") is None  # database away
