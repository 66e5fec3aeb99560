"""Storage against the real PostgreSQL: the compare-and-set window protocol and the job's metrics."""

from __future__ import annotations

from datetime import timedelta
from threading import Barrier, Thread

import pytest

from elis import clock
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.models import Job, JobStatus

pytestmark = pytest.mark.integration


def new_job(**overrides) -> store.NewJob:
    fields = dict(policy="mlfq", prompt="hi", messages=[{"role": "user", "content": "hi"}], prompt_ids=[1, 2, 3],
                  max_tokens=100, temperature=0.0, top_p=1.0, stop=[], stop_token_ids=[])
    return store.NewJob(**{**fields, **overrides})


def make_job(url: str, at=None) -> str:
    with session_scope(url) as session:
        return store.create_job(session, new=new_job(), now=at or clock.now()).id


def commit_for(job_id: str, index: int, new_ids: list[int], started, ended, **overrides) -> store.WindowCommit:
    fields = dict(job_id=job_id, window_index=index, worker="w1", new_ids=new_ids, output_text="t", started_at=started,
                  ended_at=ended, compute_s=0.1, predict_s=None, enqueued_at=None, prediction_before=None,
                  prediction_after=None)
    return store.WindowCommit(**{**fields, **overrides})


def test_claim_records_the_wait_and_a_second_claim_of_the_same_window_is_refused(db_url):
    t0 = clock.now()
    job_id = make_job(db_url, t0)
    with session_scope(db_url) as session:
        job = store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False,
                                 now=t0 + timedelta(seconds=2))
        assert job is not None and job.status == "running"
        assert job.queuing_delay_s == pytest.approx(2.0)
    with session_scope(db_url) as session:
        assert store.claim_window(session, job_id=job_id, window_index=0, worker="w2", redelivered=False,
                                  now=t0 + timedelta(seconds=3)) is None


def test_a_redelivered_message_resumes_a_job_left_running_by_a_dead_worker(db_url):
    t0 = clock.now()
    job_id = make_job(db_url, t0)
    with session_scope(db_url) as session:
        store.claim_window(session, job_id=job_id, window_index=0, worker="dead", redelivered=False, now=t0)
    with session_scope(db_url) as session:
        job = store.claim_window(session, job_id=job_id, window_index=0, worker="w2", redelivered=True, now=t0)
        assert job is not None and job.worker == "w2" and job.next_window == 0


def test_committing_the_same_window_twice_appends_its_tokens_once(db_url):
    t0 = clock.now()
    job_id = make_job(db_url, t0)
    with session_scope(db_url) as session:
        store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False, now=t0)
    t1 = t0 + timedelta(seconds=1)
    first = commit_for(job_id, 0, [5, 6, 7], t0, t1, yielded=True, priority=3)
    with session_scope(db_url) as session:
        assert store.commit_window(session, commit=first) is not None
    with session_scope(db_url) as session:
        assert store.commit_window(session, commit=first) is None
    with session_scope(db_url) as session:
        job = store.get_job(session, job_id=job_id)
        assert job.generated_ids == [5, 6, 7]
        assert job.num_windows == 1 and len(job.windows) == 1
        assert job.status == "queued" and job.next_window == 1 and job.priority == 3


def test_concurrent_commits_of_one_window_let_exactly_one_win(db_url):
    t0 = clock.now()
    job_id = make_job(db_url, t0)
    with session_scope(db_url) as session:
        store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False, now=t0)
    barrier = Barrier(4)
    results = []

    def commit(ids):
        barrier.wait()
        with session_scope(db_url) as session:
            results.append(store.commit_window(session, commit=commit_for(job_id, 0, ids, t0, clock.now())) is not None)

    threads = [Thread(target=commit, args=([i, i],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    with session_scope(db_url) as session:
        job = store.get_job(session, job_id=job_id)
        assert len(job.generated_ids) == 2 and job.num_windows == 1


def finish_in_one_window(url: str, job_id: str, t0):
    """Claim the job's first window 1 s after t0 and finish it at t0 + 3 s with 4 tokens; the job as committed."""
    with session_scope(url) as session:
        store.claim_window(session, job_id=job_id, window_index=0, worker="w1", redelivered=False,
                           now=t0 + timedelta(seconds=1))
    done = commit_for(job_id, 0, [9] * 4, t0 + timedelta(seconds=1), t0 + timedelta(seconds=3), finish_reason="eos")
    with session_scope(url) as session:
        return store.commit_window(session, commit=done)


def test_a_finished_job_stores_jct_queuing_delay_and_token_counts(db_url):
    t0 = clock.now()
    job_id = make_job(db_url, t0)
    job = finish_in_one_window(db_url, job_id, t0)
    assert job.status == JobStatus.DONE.value and job.finish_reason == "eos"
    assert job.jct_s == pytest.approx(3.0)
    assert job.queuing_delay_s == pytest.approx(1.0)
    assert job.service_s == pytest.approx(2.0)
    assert (job.num_prompt_tokens, job.num_output_tokens) == (3, 4)


def test_the_jct_counts_from_the_requests_receipt_and_the_order_from_the_store(db_url):
    t0 = clock.now()
    with session_scope(db_url) as session:
        job_id = store.create_job(session, new=new_job(received_at=t0 - timedelta(seconds=2)), now=t0).id
        # A job given no receipt (or one in the future) was received when it was stored.
        plain = store.create_job(session, new=new_job(), now=t0).id
        future = store.create_job(session, new=new_job(received_at=t0 + timedelta(seconds=9)), now=t0).id
    with session_scope(db_url) as session:
        stored = [store.get_job(session, job_id=i) for i in (plain, future)]
        assert all(j.received_at == j.arrival_at == t0 for j in stored)
    job = finish_in_one_window(db_url, job_id, t0)
    assert job.arrival_at == t0
    assert job.jct_s == pytest.approx(5.0)  # 2 s of admission, 1 s queued, 2 s running
    assert job.queuing_delay_s == pytest.approx(1.0)


def test_cancelling_a_queued_job_ends_it_and_a_running_job_stops_at_its_window_boundary(db_url):
    t0 = clock.now()
    queued, running = make_job(db_url, t0), make_job(db_url, t0)
    with session_scope(db_url) as session:
        store.claim_window(session, job_id=running, window_index=0, worker="w1", redelivered=False, now=t0)
    with session_scope(db_url) as session:
        assert store.request_cancel(session, job_id=queued, now=t0).status == "cancelled"
        assert store.request_cancel(session, job_id=running, now=t0).status == "running"
    with session_scope(db_url) as session:
        job = store.commit_window(session, commit=commit_for(running, 0, [1], t0, clock.now(), yielded=True, priority=1))
        assert job.status == "cancelled" and job.generated_ids == [1]
    with session_scope(db_url) as session:
        assert store.claim_window(session, job_id=queued, window_index=0, worker="w", redelivered=False, now=t0) is None


def test_the_reconciler_queries_find_unpublished_and_starving_jobs(db_url):
    old = clock.now() - timedelta(seconds=60)
    unpublished, published = make_job(db_url, old), make_job(db_url, old)
    with session_scope(db_url) as session:
        store.mark_published(session, job_id=published, window_index=0, priority=5)
    with session_scope(db_url) as session:
        lost = {j.id for j in store.jobs_to_republish(session, older_than=clock.now() - timedelta(seconds=5))}
        starving = {j.id for j in store.starving_jobs(session, waiting_since_before=clock.now() - timedelta(seconds=30))}
    assert lost == {unpublished}
    assert starving == {unpublished, published}
    # A job in the system 60 s, back in the queue 5 s ago (it yielded): by its whole time it may starve.
    requeued = make_job(db_url, old)
    with session_scope(db_url) as session:
        session.get(Job, requeued).enqueued_at = clock.now() - timedelta(seconds=5)
    cut = clock.now() - timedelta(seconds=30)
    with session_scope(db_url) as session:
        per_wait = {j.id for j in store.starving_jobs(session, waiting_since_before=cut)}
        whole_time = {j.id for j in store.starving_jobs(session, waiting_since_before=cut, since_arrival=True)}
    assert requeued not in per_wait and requeued in whole_time


def test_the_migrations_create_exactly_the_schema_the_models_describe(pg_url):
    from alembic import command

    from elis.storage.migrate import alembic_config

    command.check(alembic_config(pg_url))  # raises when the models and the migrations differ


def test_a_job_starts_at_once_only_while_live_workers_have_more_slots_than_jobs_queued_or_running(db_url):
    from elis.storage.profiles import record_worker_profile

    t0 = clock.now()
    live_since = t0 - timedelta(seconds=60)

    def at_once() -> bool:
        with session_scope(db_url) as session:
            return store.starts_at_once(session, live_since=live_since)

    assert not at_once()  # no worker known
    with session_scope(db_url) as session:
        record_worker_profile(session, worker="old", slots=8, prefill_s_per_token=1e-3, cached_prefill_s_per_token=0.0,
                              decode_step_s=0.03, prefill_weight=0.1, now=t0 - timedelta(seconds=600))
    assert not at_once()  # only a worker not seen for ten minutes
    with session_scope(db_url) as session:
        record_worker_profile(session, worker="w1", slots=2, prefill_s_per_token=1e-3, cached_prefill_s_per_token=0.0,
                              decode_step_s=0.03, prefill_weight=0.1, now=t0)
    assert at_once()
    running = [make_job(db_url, t0)]
    assert at_once()  # one queued, and a second slot for the next
    running.append(make_job(db_url, t0))
    assert not at_once()
    with session_scope(db_url) as session:
        store.claim_window(session, job_id=running[0], window_index=0, worker="w1", redelivered=False, now=t0)
    assert not at_once()  # one runs, the other waits for the second slot
    with session_scope(db_url) as session:
        store.claim_window(session, job_id=running[1], window_index=0, worker="w1", redelivered=False, now=t0)
    assert not at_once()  # both slots taken


def test_a_deferred_admission_prediction_is_stored_once_and_keeps_a_workers_prediction(db_url):
    job_id = make_job(db_url)
    with session_scope(db_url) as session:
        assert store.stored_admission(session, job_id=job_id) == (None, None, None, None)
        assert store.record_admission_prediction(session, job_id=job_id, tokens=120.0, prior_score=0.7,
                                                 prior_fingerprint="abc")
    with session_scope(db_url) as session:
        assert store.stored_admission(session, job_id=job_id) == (120.0, 120.0, 0.7, "abc")
        # A second one (a retried admission) changes nothing.
        assert not store.record_admission_prediction(session, job_id=job_id, tokens=5.0, prior_score=0.1,
                                                     prior_fingerprint="def")
    kept = make_job(db_url)
    with session_scope(db_url) as session:  # a prior score already stored (a batch line's) is not replaced
        session.get(Job, kept).prior_score = 0.2
    with session_scope(db_url) as session:
        assert store.record_admission_prediction(session, job_id=kept, tokens=9.0, prior_score=0.9,
                                                 prior_fingerprint="ghi")
        assert store.stored_admission(session, job_id=kept) == (9.0, 9.0, 0.2, "ghi")
    other = make_job(db_url)
    with session_scope(db_url) as session:  # the worker re-predicted before the admission prediction came
        session.get(Job, other).latest_prediction = 60.0
    with session_scope(db_url) as session:
        assert store.record_admission_prediction(session, job_id=other, tokens=300.0, prior_score=None,
                                                 prior_fingerprint=None)
    with session_scope(db_url) as session:
        assert store.stored_admission(session, job_id=other) == (300.0, 60.0, None, None)
