"""The live quality guard against the real PostgreSQL: finished jobs whose predictions rank badly turn the
order to FCFS (the API says so), and good ones bring it back."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from elis import clock
from elis.api.app import create_app
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.tasks.scheduling_setup import build_scheduler, refresh_scheduler
from tests.integration.test_storage_postgres import commit_for, new_job

pytestmark = pytest.mark.integration


def finished_job(url: str, output_tokens: int, initial: float, after_first_window: float) -> str:
    """A job that ran two windows (50 tokens, then the rest) with these predictions, and ended with EOS."""
    now = clock.now()
    with session_scope(url) as session:
        job_id = store.create_job(session, new=new_job(policy="isrtf", max_tokens=1000), now=now,
                                  initial_prediction=initial).id
    for index, (tokens, prediction, reason) in enumerate([(50, after_first_window, None),
                                                           (output_tokens - 50, None, "eos")]):
        with session_scope(url) as session:
            assert store.claim_window(session, job_id=job_id, window_index=index, worker="w1", redelivered=False,
                                      now=clock.now()) is not None
        with session_scope(url) as session:
            commit = commit_for(job_id, index, [7] * tokens, clock.now(), clock.now(), prediction_after=prediction,
                                finish_reason=reason, yielded=reason is None, priority=3)
            assert store.commit_window(session, commit=commit) is not None
    return job_id


@pytest.fixture()
def guarded(settings):
    # guard_refresh_s: the API's own monitor refreshes once at start only, so the test's refreshes see every change.
    guarded = settings.model_copy(update={"policy": "isrtf", "guard_min_jobs": 10, "guard_window_jobs": 12,
                                          "guard_refresh_s": 3600.0,
                                          "guard_start_in_fallback": False, "shadow_predictions": False})
    with TestClient(create_app(guarded)) as client:
        # Let the monitor's start-up refresh finish first: one that ends after a test's own refresh would
        # overwrite what that refresh learned with what the database held at start-up.
        deadline = time.monotonic() + 30.0
        while client.app.state.scheduler.quality is None and time.monotonic() < deadline:
            time.sleep(0.05)
        yield guarded, client


def test_predictions_that_rank_backwards_turn_the_order_to_fcfs_and_good_ones_bring_it_back(guarded):
    settings, client = guarded
    scheduler = client.app.state.scheduler
    url = settings.resolved_database_url
    assert client.get("/v1/stats").json()["ordering"] == "isrtf"
    lengths = [60 + 40 * i for i in range(12)]
    for length in lengths:  # the longer the job, the shorter its predictions: tau -1
        finished_job(url, length, initial=1000.0 - length, after_first_window=1000.0 - length)
    assert refresh_scheduler(scheduler, settings) is True
    stats = client.get("/v1/stats").json()
    assert stats["ordering"] == "fcfs (guard fallback)" and stats["guard"]["fallback"] is True
    assert stats["rank_quality"]["admission"]["tau"] == pytest.approx(-1.0)
    assert stats["rank_quality"]["pooled"]["n"] == 12
    health = client.get("/healthz").json()
    assert health["ordering"] == "fcfs (guard fallback)" and "tau -1.000" in health["guard"]
    accepted = client.post("/v1/jobs", json={"prompt": "Name three rivers.", "max_tokens": 64}).json()
    assert accepted["ordering"] == "fcfs (guard fallback)"
    assert accepted["priority"] == settings.num_priority_levels - 2  # FCFS: every job at one level
    scheduler.fallback_by_prefill = True  # opt-in: the fallback orders by the prompt's prefill (known, not predicted)
    short = client.post("/v1/jobs", json={"prompt": "Name three rivers.", "max_tokens": 64}).json()
    long = client.post("/v1/jobs", json={"prompt": "Name three rivers. " * 300, "max_tokens": 64}).json()
    assert short["ordering"] == long["ordering"] == "prefill first (guard fallback)"
    assert short["priority"] > long["priority"]  # the shorter prefill goes first (higher = sooner)
    scheduler.fallback_by_prefill = False

    for length in lengths:  # now predictions rank perfectly, and push the bad ones out of the window
        finished_job(url, length, initial=float(length), after_first_window=float(length - 50))
    assert refresh_scheduler(scheduler, settings) is True
    stats = client.get("/v1/stats").json()
    assert stats["ordering"] == "isrtf" and stats["guard"]["judged_tau"] == pytest.approx(1.0)
    # The aging bound follows the observed service times (floor when they are tiny, as here).
    assert stats["aging"]["enabled"] is True and stats["aging"]["bound_s"] == settings.aging_floor_s


def test_after_a_spell_without_re_predictions_pre_emption_is_judged_on_the_older_jobs_that_had_them(guarded):
    settings, client = guarded
    scheduler, url = client.app.state.scheduler, settings.resolved_database_url
    lengths = [60 + 40 * i for i in range(12)]
    isrtf = [finished_job(url, length, initial=float(length), after_first_window=float(length - 50))
             for length in lengths]
    # Then a full guard window of jobs with admission predictions only (as SJF makes): no re-predictions.
    for length in lengths:
        finished_job(url, length, initial=float(length), after_first_window=None)
    with session_scope(url) as session:
        assert {f.job_id for f in store.recent_repredicted(session, limit=50)} == set(isrtf)
        assert not any(f.step_predictions for f in store.recent_finished(session, limit=settings.guard_window_jobs))
        # The refresh reads both at once (each job's windows once): the same lists as the two reads.
        finished, repredicted = store.recent_guard_evidence(session, limit=12)
        assert finished == store.recent_finished(session, limit=12)
        assert repredicted == store.recent_repredicted(session, limit=12)
        assert {f.job_id for f in repredicted} == set(isrtf) and all(f.step_predictions for f in repredicted)
    scheduler.guard.preempting = False
    refresh_scheduler(scheduler, settings)
    stats = client.get("/v1/stats").json()
    assert stats["guard"]["preempting"] is True, stats["guard"]["preempt_reason"]
    assert "of 24 finished jobs" in stats["guard"]["preempt_reason"]  # the 12 last ones and the 12 re-predicted
    assert stats["rank_quality"]["num_jobs"] == 12 and stats["rank_quality"]["pooled"]["n"] == 0
    assert [step for step, _ in stats["calibration"]["factor_by_step"]] == [0, 50]


def test_forced_replays_feed_the_aging_bound_but_not_the_guard(guarded):
    from datetime import timedelta

    settings, client = guarded
    url = settings.resolved_database_url
    # A forced replay that took 40 s of engine time: its length says nothing about the predictor, its cost does.
    with session_scope(url) as session:
        job_id = store.create_job(session, new=new_job(policy="fcfs", force_length=True, true_output_tokens=20),
                                  now=clock.now()).id
    start = clock.now()
    with session_scope(url) as session:
        assert store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False,
                                  now=start) is not None
    with session_scope(url) as session:
        commit = commit_for(job_id, 0, [7] * 20, start, start + timedelta(seconds=40), finish_reason="eos")
        assert store.commit_window(session, commit=commit) is not None
    refresh_scheduler(client.app.state.scheduler, settings)
    stats = client.get("/v1/stats").json()
    assert stats["aging"]["bound_s"] == pytest.approx(settings.aging_factor * 40.0, rel=0.01)
    assert client.app.state.scheduler.quality.num_jobs == 0  # the guard judged no job


def served(url: str, arrival, start, seconds: float, policy: str = "isrtf") -> str:
    """A job that arrived at `arrival` and ran one window from `start` for `seconds`, to EOS."""
    from datetime import timedelta

    with session_scope(url) as session:
        job_id = store.create_job(session, new=new_job(policy=policy, max_tokens=100), now=arrival).id
    with session_scope(url) as session:
        assert store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False,
                                  now=start) is not None
    with session_scope(url) as session:
        commit = commit_for(job_id, 0, [7] * 10, start, start + timedelta(seconds=seconds), finish_reason="eos")
        assert store.commit_window(session, commit=commit) is not None
    return job_id


def test_jobs_that_finished_later_than_fcfs_would_have_trip_the_outcome_guard(settings):
    from datetime import timedelta

    url = settings.resolved_database_url
    t0 = clock.now() - timedelta(seconds=60)
    # One slot. The long job arrived second and ran first: mean JCT 10.55 s against 5.95 s in arrival order.
    served(url, t0, t0 + timedelta(seconds=10.1), 1.0)
    served(url, t0 + timedelta(seconds=0.1), t0 + timedelta(seconds=0.1), 10.0)
    now = clock.now()
    with session_scope(url) as session:  # a job still queued, arrived before them all: censored at `now`
        waiting = store.create_job(session, new=new_job(policy="isrtf", max_tokens=100),
                                   now=t0 - timedelta(seconds=1)).id
    with session_scope(url) as session:
        cohort = store.recent_cohort(session, limit=10, arrived_before=now, now=now)
        alone = store.recent_cohort(session, limit=10, arrived_before=t0, now=now).jobs
        assert [job.finish_s for job in alone] == [pytest.approx(now.timestamp())]
        store.request_cancel(session, job_id=waiting, now=clock.now())
    censored = cohort.jobs[0]
    assert censored.finish_s == pytest.approx(now.timestamp()) and censored.spans == ()
    # What it likely still needs: the finished jobs' mean residual length (10 tokens; 100 left under max_tokens)
    # at the cohort's time per token (11 s for 20 tokens).
    assert censored.remaining_s == pytest.approx(10 * 11.0 / 20)
    with session_scope(url) as session:
        cohort = store.recent_cohort(session, limit=10, arrived_before=now, now=now)
        assert store.recent_cohort(session, limit=10, arrived_before=t0, now=now).jobs == ()
    assert cohort.slots == 1 and [round(j.slot_s, 3) for j in cohort.jobs] == [1.0, 10.0]

    guarded = settings.model_copy(update={"policy": "isrtf", "outcome_min_jobs": 2, "guard_refresh_s": 3600.0,
                                          "guard_start_in_fallback": False, "shadow_predictions": False})
    with TestClient(create_app(guarded)) as client:
        refresh_scheduler(client.app.state.scheduler, guarded)
        stats = client.get("/v1/stats").json()
        assert stats["ordering"] == "fcfs (outcome guard)" and stats["outcome"]["tripped"] is True
        assert stats["outcome"]["check"]["ratio"] == pytest.approx(10.55 / 5.95, rel=1e-3)
        health = client.get("/healthz").json()
        assert health["ordering"] == "fcfs (outcome guard)" and "outcome guard" in health["guard"]
        accepted = client.post("/v1/jobs", json={"prompt": "Name three rivers.", "max_tokens": 64}).json()
        assert accepted["ordering"] == "fcfs (outcome guard)"
        metrics = client.get("/metrics").text
        assert 'elis_predictor_rank_quality{measure="outcome_tripped"} 1.0' in metrics


def test_the_aging_bound_grows_with_what_fcfs_would_give_the_latest_jobs_queued_ones_included(guarded):
    from datetime import timedelta

    settings, client = guarded
    url = settings.resolved_database_url
    t0 = clock.now() - timedelta(seconds=100)
    # One slot, four 10 s jobs that arrived together and ran back to back, and two jobs still queued since t0 + 5
    # s, each likely needing 10 s (the done jobs' length at their time per token): FCFS would have finished the
    # six 10, 20, 30, 40, 45 and 55 s after they arrived, 33.3 s on the mean.
    for index in range(4):
        served(url, t0, t0 + timedelta(seconds=10 * index), 10.0)
    for _ in range(2):
        with session_scope(url) as session:
            store.create_job(session, new=new_job(policy="isrtf", max_tokens=10), now=t0 + timedelta(seconds=5))
    scheduler = client.app.state.scheduler
    refresh_scheduler(scheduler, settings)
    aging = client.get("/v1/stats").json()["aging"]
    # Service times alone would give 3 x 10 s; the bound follows FCFS's 33.3 s.
    assert aging["fcfs_factor"] == 1.0 and aging["fcfs_mean_s"] == pytest.approx(100 / 3, rel=0.01)
    assert scheduler.aging_bound_s == pytest.approx(100 / 3, rel=0.01)
    # Only the two queued jobs as the latest jobs: none of them done, so what they need comes from the last done
    # jobs (10 tokens in 10 s each). After the backlog's 35 s left at t0 + 5, FCFS would give them 45 and 55 s
    # (learning from the cohort's own done jobs, none, it read 35 s each).
    two = settings.model_copy(update={"aging_fcfs_jobs": 2})
    latest = build_scheduler(two)
    refresh_scheduler(latest, two)
    assert latest.aging_cohort_jobs == 2 and latest.fcfs_mean_s == pytest.approx(50.0, rel=0.01)
    off = settings.model_copy(update={"aging_fcfs_factor": 0.0})
    with TestClient(create_app(off)) as plain:
        refresh_scheduler(plain.app.state.scheduler, off)
        assert plain.get("/v1/stats").json()["aging"]["bound_s"] == pytest.approx(30.0, rel=0.01)


def test_a_job_holds_one_slot_even_when_its_window_end_work_overlaps_its_next_window(settings):
    """The outcome guard's slots: job A's first window ends with 0.6 s of end work measured past the start of its
    second window (clocks that disagree); beside job B that would read 3 slots, the cohort counts 2."""
    from datetime import timedelta

    url = settings.resolved_database_url
    t0 = clock.now() - timedelta(seconds=30)
    with session_scope(url) as session:
        job_a = store.create_job(session, new=new_job(policy="isrtf", max_tokens=100), now=t0).id
        job_b = store.create_job(session, new=new_job(policy="isrtf", max_tokens=100), now=t0).id
    with session_scope(url) as session:
        for job_id in (job_a, job_b):
            assert store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False,
                                      now=t0) is not None
    at = lambda seconds: t0 + timedelta(seconds=seconds)  # noqa: E731
    with session_scope(url) as session:
        assert store.commit_window(session, commit=commit_for(job_a, 0, [7] * 10, at(0), at(2.0))) is not None
        store.record_window_overhead(session, job_id=job_a, window_index=0, overhead_s=0.6)
    with session_scope(url) as session:
        assert store.commit_window(session, commit=commit_for(job_a, 1, [7] * 10, at(2.1), at(4.0),
                                                              finish_reason="eos")) is not None
        assert store.commit_window(session, commit=commit_for(job_b, 0, [7] * 20, at(0), at(4.5),
                                                              finish_reason="eos")) is not None
    now = clock.now()
    with session_scope(url) as session:
        cohort = store.recent_cohort(session, limit=10, arrived_before=now, now=now)
    assert cohort.slots == 2
    assert sorted(round(job.slot_s, 3) for job in cohort.jobs) == [4.0, 4.5]  # A's first span ends at 2.1, not 2.6
