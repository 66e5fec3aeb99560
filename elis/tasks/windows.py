"""The window task: run one job for one iteration window, commit, then yield (re-publish) or run on.

The step order is the design's: claim (compare-and-set) -> engine -> decide finish -> policy (and
re-prediction) -> commit guarded by the window index -> publish the continuation -> ack.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime

from celery.exceptions import Reject

from elis import clock, metrics
from elis.predictor.loops import is_greedy, loop_period
from elis.scheduling import JobView
from elis.scheduling.policy import with_prediction
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.models import Job, JobStatus
from elis.tasks.app import celery_app
from elis.tasks.contracts import EngineError, FinishReason, SamplingSettings, WindowOutput
from elis.tasks.publish import RUN_WINDOW_TASK
from elis.tasks.recovery import is_outage, outage_reject
from elis.tasks.runtime import WorkerNotReady, WorkerRuntime, get_runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSnapshot:
    """The plain data a window needs, copied out of the session."""

    id: str
    policy: str
    prompt: str
    prompt_ids: list[int]
    generated_ids: list[int]
    max_tokens: int
    sampling: SamplingSettings
    next_window: int
    arrival_at: datetime
    enqueued_at: datetime
    latest_prediction: float | None
    initial_prediction: float | None
    true_output_tokens: int | None
    service_s: float
    # The worker that ran the job's last window (None before its first): a resume on the same worker may
    # find the context in its prefix cache.
    last_worker: str | None = None
    # The prompt prior's score at admission, and the prior's fingerprint (see PredictionInput).
    prior_score: float | None = None
    prior_fingerprint: str | None = None

    @property
    def token_budget(self) -> int:
        """How many tokens the job generates at most: its known length when forced, else max_tokens. A forced
        job keeps the max_tokens its client gave as its cap, so its predictions are clipped as a natural job's
        would be (clipping them at the known length would hand the scheduler the answer)."""
        if self.sampling.force_length and self.true_output_tokens is not None:
            return min(self.true_output_tokens, self.max_tokens)
        return self.max_tokens

    @classmethod
    def of(cls, job: Job) -> JobSnapshot:
        return cls(
            id=job.id,
            policy=job.policy,
            prompt=job.prompt,
            prompt_ids=list(job.prompt_ids),
            generated_ids=list(job.generated_ids),
            max_tokens=job.max_tokens,
            sampling=SamplingSettings(
                temperature=job.temperature,
                top_p=job.top_p,
                stop=tuple(job.stop or ()),
                stop_token_ids=tuple(job.stop_token_ids or ()),
                force_length=job.force_length,
            ),
            next_window=job.next_window,
            arrival_at=job.arrival_at,
            enqueued_at=job.enqueued_at,
            latest_prediction=job.latest_prediction,
            initial_prediction=job.initial_prediction,
            true_output_tokens=job.true_output_tokens,
            service_s=job.service_s or 0.0,
            last_worker=max(job.windows, key=lambda w: w.index).worker if job.windows else None,
            prior_score=job.prior_score,
            prior_fingerprint=job.prior_fingerprint,
        )


def finish_reason(output: WindowOutput, generated: list[int], text: str, job: JobSnapshot) -> tuple[str | None, str]:
    """Why the job ends after this window (None: it goes on), and its text cut at a stop string.

    Stop strings are checked on the whole text, so one that straddles a window boundary is still found.
    """
    for stop in job.sampling.stop:
        if stop and stop in text and not job.sampling.force_length:
            return FinishReason.STOP.value, text[: text.index(stop)]
    if output.finished:
        return (output.reason or FinishReason.EOS).value, text
    if len(generated) >= job.max_tokens:
        return FinishReason.LENGTH.value, text
    if len(generated) >= job.token_budget:
        return FinishReason.EOS.value, text  # a forced length below the cap: where the natural job ended
    return None, text


def most_remaining(job: JobSnapshot, num_generated: int) -> int:
    """The job's longest possible remaining length: what its max_tokens leaves."""
    return max(job.max_tokens - num_generated, 0)


def clip_prediction(prediction: float | None, job: JobSnapshot, num_generated: int) -> float | None:
    if prediction is None:
        return None
    return float(min(max(prediction, 0.0), most_remaining(job, num_generated)))


def known_remaining(job: JobSnapshot, num_generated: int, text: str) -> int | None:
    """What max_tokens leaves a greedy job whose output is caught in a loop (a greedy loop never ends before
    the limit: `elis.predictor.loops`); None for a sampled job, or one that does not loop."""
    if not is_greedy(job.sampling.temperature) or not text or loop_period(text) is None:
        return None
    return most_remaining(job, num_generated)


def job_view(job: JobSnapshot, num_generated: int, prediction: float | None, service_s: float, now: datetime,
             known: int | None = None) -> JobView:
    """The policy's view of the job as it leaves a window (it would re-enter the queue now)."""
    return JobView(
        job_id=job.id,
        arrival_time=job.arrival_at.timestamp(),
        num_generated=num_generated,
        predicted_remaining=prediction,
        initial_prediction=job.initial_prediction,
        enqueued_at=now.timestamp(),
        service_time=service_s,
        true_remaining=None if job.true_output_tokens is None else max(job.true_output_tokens - num_generated, 0),
        known_remaining=known,
        # Before its first window a job's prompt is in no prefix cache (a resumed job's context mostly is).
        prefill_tokens=len(job.prompt_ids) if num_generated == 0 else 0,
    )


def run_job_windows(runtime: WorkerRuntime, job_id: str, window_index: int, redelivered: bool) -> str:
    """Run a claimed job's windows until it yields, finishes or is cancelled. Returns what happened."""
    url = runtime.settings.resolved_database_url
    with session_scope(url) as session:
        claimed = store.claim_window(
            session, job_id=job_id, window_index=window_index, worker=runtime.worker_name,
            redelivered=redelivered, now=clock.now(),
        )
        if claimed is None:
            runtime.count("windows_skipped")
            return "skipped"
        job = JobSnapshot.of(claimed)
    scheduler = runtime.scheduler
    if job.last_worker is not None and job.next_window > 0:
        runtime.switch_cost.resumed_on(job.last_worker == runtime.worker_name)
    generated = list(job.generated_ids)
    index = job.next_window
    enqueued_at: datetime | None = job.enqueued_at
    prediction = job.latest_prediction
    service_s = job.service_s
    while True:
        started = clock.now()
        budget = min(runtime.settings.window_tokens, job.token_budget - len(generated))
        try:
            with metrics.window_in_engine():
                output = runtime.engine.run_window(job.prompt_ids, generated, budget, job.sampling)
        except (EngineError, ValueError) as exc:
            log.error("job %s window %d failed in the engine: %s", job.id, index, exc)
            with session_scope(url) as session:
                store.fail_job(session, job_id=job.id, error=f"engine error: {exc}", now=clock.now())
            return "failed"
        engine_done = time.perf_counter()
        ended = clock.now()
        generated = generated + output.new_ids
        reason, text = finish_reason(output, generated, runtime.engine.decode(generated), job)
        service_s += (ended - started).total_seconds()
        yielded, priority, prediction_after, predict_s, failed = False, None, None, None, False
        if reason is None:
            awaiting_admission = False
            if prediction is None and job.initial_prediction is None \
                    and scheduler.base_policy(job.policy).uses_predictions:
                # Admitted while a slot was free (or, SJF, in a guard's FCFS fallback), its prediction made after the
                # store (elis.api.deferred): read it now if it has come, so the decision and any re-prediction (the
                # prior's score) use it.
                job, prediction = _with_stored_admission(url, job)
                awaiting_admission = prediction is None and index < ADMISSION_GRACE_WINDOWS
            head = _queue_head(runtime, job.policy)
            now = ended.timestamp()
            # The last prediction, clipped to what max_tokens leaves now: never above the longest remaining
            # length should_repredict tests, so a skipped re-prediction cannot change the decision.
            # Under `LoopsLast` (the guard's fallback, when on) a loop's remaining length is what orders the job.
            known = known_remaining(job, len(generated), text) if scheduler.moves_loops_last(job.policy) else None
            view = job_view(job, len(generated), clip_prediction(prediction, job, len(generated)), service_s, ended,
                            known)
            cost = runtime.switch_cost.estimate(len(job.prompt_ids) + len(generated))
            # Re-predict only under a policy that uses it now (not FCFS while the quality guard falls back) and
            # only where a prediction could make the job yield (or as the guard's sample): on a CPU worker the
            # predictor takes cores from the engine.
            longest = most_remaining(job, len(generated))
            # While the API's prediction may still come, the job keeps its slot rather than have this worker read
            # its prompt through the served model (a model it otherwise never loads: run 50 loaded it for that).
            if runtime.predictor is not None and not awaiting_admission \
                    and scheduler.should_repredict(view, longest, head, now, cost, job.policy):
                predict_started = time.perf_counter()
                raw = runtime.predictor.predict_one(_prediction_input(job, text, len(generated)))
                predict_s = time.perf_counter() - predict_started
                failed = raw is None
                prediction_after = clip_prediction(raw, job, len(generated))
                view = with_prediction(view, prediction_after)
            decision = scheduler.decide(view, head, now, cost, job.policy)
            if decision.yields:
                yielded = True
                priority = decision.level
        commit = store.WindowCommit(
            job_id=job.id, window_index=index, worker=runtime.worker_name, new_ids=output.new_ids,
            output_text=text, started_at=started, ended_at=ended, compute_s=output.compute_s,
            predict_s=predict_s, enqueued_at=enqueued_at, prediction_before=prediction,
            prediction_after=prediction_after, prediction_failed=failed, finish_reason=reason,
            yielded=yielded, priority=priority,
        )
        with session_scope(url) as session:
            committed = store.commit_window(session, commit=commit)
            status = None if committed is None else committed.job_status
        if committed is None:
            runtime.count("windows_duplicate")
            return "duplicate"
        if status is JobStatus.QUEUED:
            runtime.publish(runtime.settings, job_id=job.id, window_index=index + 1, priority=priority)
            with session_scope(url) as session:
                store.mark_published(session, job_id=job.id, window_index=index + 1, priority=priority)
        overhead_s = time.perf_counter() - engine_done
        with session_scope(url) as session:
            store.record_window_overhead(session, job_id=job.id, window_index=index, overhead_s=overhead_s)
        # A yield pays this overhead again at the resume (claim); a continuing window pays only the commit.
        runtime.switch_cost.window_done(output.compute_s, len(output.new_ids), overhead_s if yielded else None)
        runtime.count("windows_run")
        metrics.observe_window(output.compute_s, len(output.new_ids), predict_s, yielded)
        if status is not JobStatus.RUNNING:
            return status.value if status else "done"
        # A job that does not yield keeps its slot and runs its next window at once.
        index += 1
        enqueued_at = None
        prediction = prediction_after if prediction_after is not None else prediction


# Window ends within which a job admitted without its prediction waits for the API's (elis.api.deferred) instead of
# predicting itself: the API defers a re-predicting policy's jobs (ISRTF) only while slots are free, at most as many
# as there are free slots at once, each prediction taking well under a second, so two windows (1-3 s on a CPU) cover
# a burst onto an idle worker.
ADMISSION_GRACE_WINDOWS = 2


def _with_stored_admission(url: str, job: JobSnapshot) -> tuple[JobSnapshot, float | None]:
    """The job with its admission prediction and prior score as stored now, and its latest prediction."""
    with session_scope(url) as session:
        initial, latest, prior_score, prior_fingerprint = store.stored_admission(session, job_id=job.id)
    if initial is None:
        return job, None
    return replace(job, initial_prediction=initial, latest_prediction=latest, prior_score=prior_score,
                   prior_fingerprint=prior_fingerprint), latest


def _queue_head(runtime: WorkerRuntime, policy: str) -> JobView | None:
    """The queued job RabbitMQ would deliver next (highest level, then longest waiting); None: none waits. Under
    `LoopsLast` its loop, if any, too: a demoted loop at the head must not take the slot back from another."""
    with session_scope(runtime.settings.resolved_database_url) as session:
        head = store.queue_head(session)
        if head is None:
            return None
        snapshot = JobSnapshot.of(head)
    generated = len(snapshot.generated_ids)
    known = None
    if generated and runtime.scheduler.moves_loops_last(policy):
        known = known_remaining(snapshot, generated, runtime.engine.decode(snapshot.generated_ids))
    return job_view(snapshot, generated, snapshot.latest_prediction, snapshot.service_s, snapshot.enqueued_at, known)


def _prediction_input(job: JobSnapshot, text: str, num_generated: int):
    from elis.predictor.serving import PredictionInput

    return PredictionInput(prompt=job.prompt, output_text=text, num_generated=num_generated, max_tokens=job.max_tokens,
                           temperature=job.sampling.temperature, prior_score=job.prior_score,
                           prior_fingerprint=job.prior_fingerprint)


@celery_app.task(name=RUN_WINDOW_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_window(self, job_id: str, window_index: int) -> str:
    """Celery entry point: one message = one job-window (more for a job that does not yield)."""
    try:
        runtime = get_runtime()
    except WorkerNotReady:
        raise Reject("worker not ready", requeue=True)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered", False))
    metrics.observe_delivery(redelivered)
    try:
        return run_job_windows(runtime, job_id, window_index, redelivered)
    except Exception as exc:
        if is_outage(exc):  # the database or broker is away: wait for it, never consume the message
            raise outage_reject(runtime.settings, job_id, window_index, exc) from exc
        return _fail_or_requeue(runtime, job_id, window_index, redelivered, exc)


def _fail_or_requeue(runtime: WorkerRuntime, job_id: str, window_index: int, redelivered: bool,
                     exc: Exception) -> str:
    """NOTE: a job must never be lost in RUNNING. A first unexpected failure goes back to the queue and
    resumes from its last committed window; a redelivered one fails the job with its error, so a job that
    always breaks cannot loop forever."""
    log.error("job %s window %d failed: %s", job_id, window_index, type(exc).__name__, exc_info=exc)
    if not redelivered:
        raise Reject(f"{type(exc).__name__}", requeue=True) from exc
    try:
        with session_scope(runtime.settings.resolved_database_url) as session:
            store.fail_job(session, job_id=job_id, error=f"{type(exc).__name__}: {exc}", now=clock.now())
    except Exception as fail_exc:
        if is_outage(fail_exc):
            raise outage_reject(runtime.settings, job_id, window_index, fail_exc) from fail_exc
        raise
    return "failed"
