"""Admission: the one path by which a request becomes a stored, published job.

`POST /v1/jobs` and every line of an OpenAI-style batch go through `admit`, so both get the same checks in the same
order: max_tokens within the caller's limit, the prompt tokenized, stop_token_ids inside the vocabulary, prompt +
max_tokens within the model's context, the tenant's limits; then the initial (shadow) prediction, the stored job and
its first window published. A job whose place the prediction cannot change (the order in force does not read it and
its worker never re-predicts, or live workers have a slot for it and for every queued job) is stored and published
first and predicted after (`elis.api.deferred`). A refusal is an
`AdmissionRefused` that each caller maps to its own answer (an HTTP error for the route, an error-file line for a
batch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from elis import clock
from elis.api.auth import Caller
from elis.api.deferred import PendingPrediction
from elis.api.deps import AdmissionPrediction
from elis.api.schemas import JobAccepted, JobCreate
from elis.config import Settings
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.models import JobStatus
from elis.tasks.priority import stored_job_priority
from elis.tasks.publish import publish_window

log = logging.getLogger(__name__)

# Seconds a client over a tenant limit is told to wait (jobs finish and free the room).
TENANT_RETRY_AFTER_S = 5


class AdmissionRefused(Exception):
    """The service will not take the job: 422 (the request must change) or 429 (a tenant limit; retry later)."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Origin:
    """Where a request came from when it is a batch line: its batch, its custom_id, and (for the completions
    endpoint) the raw prompt, tokenized without the chat template as OpenAI's completions endpoint does."""

    batch_id: str
    custom_id: str
    raw_prompt: str | None = None


def admit(state, settings: Settings, caller: Caller, body: JobCreate, origin: Origin | None = None,
          received_at: datetime | None = None) -> JobAccepted:
    """Check, store and publish one job for `caller`. Blocking (tokenizer, predictor, database): run it in a
    worker thread. `received_at`: when the request came in (default: now), where its JCT counts from; a batch's
    request is received when its admission starts (the batch's own backlog and its retries for tenant room are
    the batch's wait, shown by the batch, not its jobs'). Raises AdmissionRefused."""
    received_at = received_at or clock.now()
    max_tokens = _max_tokens(settings, caller, body)
    raw_prompt = origin.raw_prompt if origin is not None else None
    messages = body.chat() if raw_prompt is None else []
    prompt_ids = _tokenize(state.tokenizer(), messages, raw_prompt)
    _check_fits(settings, state.tokenizer().vocab_size, body, prompt_ids, max_tokens)
    new = store.NewJob(
        policy=state.scheduler.base_policy().name,
        prompt=body.prompt_text(),
        messages=messages,
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop,
        stop_token_ids=body.stop_token_ids,
        true_output_tokens=body.target_output_tokens,
        force_length=body.target_output_tokens is not None,
        workload=body.workload,
        tenant=caller.tenant,
        batch_id=origin.batch_id if origin is not None else None,
        custom_id=origin.custom_id if origin is not None else None,
        received_at=received_at,
    )
    if not _predicts(settings, state):
        return _store_and_publish(settings, state, new, None, caller)
    if settings.defer_idle_predictions and state.predictor.get() is not None:
        # The prediction cannot change where the job waits when the order does not need it at admission (FCFS, the
        # exact-length bound, MLFQ, SJF in a guard's FCFS fallback: a shadow prediction for the guard), or when live
        # slots are free for it and every queued job (it starts at once whatever its score). Either way it need not
        # wait for its prediction (elis.api.deferred). The free slots are checked and the job stored under one lock:
        # a burst onto an idle service defers only as many jobs as there are free slots.
        waits = state.scheduler.admission_waits_for_prediction(new.policy)
        accepted = _store_and_publish(settings, state, new, None, caller, only_if_starts_at_once=waits)
        if accepted is not None:
            pending = PendingPrediction(accepted.id, body.prompt_text(), max_tokens, body.temperature)
            if not state.deferred_predictions.submit(pending):  # too many wait: predict it here (back-pressure)
                state.deferred_predictions.predict_and_store(pending)
            return accepted
    return _store_and_publish(settings, state, new, _initial_prediction(state, body, max_tokens), caller)


def _max_tokens(settings: Settings, caller: Caller, body: JobCreate) -> int:
    max_tokens = body.max_tokens if body.max_tokens is not None else settings.default_max_tokens
    target = body.target_output_tokens
    if target is not None and body.max_tokens is None:
        max_tokens = target  # a trace's known length, nothing else known: the cap is the length
    elif target is not None and target > max_tokens:
        raise AdmissionRefused(422, f"target_output_tokens is {target}, above max_tokens {max_tokens}; a job cannot "
                                    "generate more than its max_tokens")
    if max_tokens > caller.max_tokens:
        raise AdmissionRefused(422, f"max_tokens is {max_tokens}; this service allows at most {caller.max_tokens}"
                                    + ("" if caller.max_tokens == settings.max_tokens_limit else " for your key"))
    return max_tokens


def _tokenize(tokenizer, messages: list[dict[str, str]], raw_prompt: str | None) -> list[int]:
    try:
        return tokenizer.encode_chat(messages) if raw_prompt is None else tokenizer.encode_text(raw_prompt)
    except Exception as exc:  # e.g. a chat that the template refuses (two system turns)
        raise AdmissionRefused(422, f"the messages cannot be formatted with the model's chat template: {exc}") from exc


def _check_fits(settings: Settings, vocab_size: int, body: JobCreate, prompt_ids: list[int], max_tokens: int) -> None:
    outside = [i for i in body.stop_token_ids if i >= vocab_size]
    if outside:
        raise AdmissionRefused(422, f"stop_token_ids: {outside} are outside the model's vocabulary "
                                    f"(ids 0 to {vocab_size - 1})")
    if len(prompt_ids) + max_tokens > settings.max_model_len:
        raise AdmissionRefused(
            422,
            f"the prompt is {len(prompt_ids)} tokens; with max_tokens {max_tokens} it exceeds the model's context "
            f"of {settings.max_model_len} tokens. Shorten the prompt or lower max_tokens.",
        )


def _predicts(settings: Settings, state) -> bool:
    # Shadow predictions: every job gets one when a predictor is loaded, whatever the policy, so the quality
    # guard can judge the predictor on this traffic (also while it holds the order at FCFS).
    return settings.shadow_predictions or state.scheduler.needs_prediction()


def _initial_prediction(state, body: JobCreate, max_tokens: int) -> AdmissionPrediction | None:
    return state.predictor.predict(body.prompt_text(), max_tokens, body.temperature)


def _check_tenant_limits(session, caller: Caller, max_tokens: int) -> None:
    """Refuse (429) when the tenant's active jobs or tokens in flight would pass its limits.

    The tenant's admission lock, taken first, is held until the caller's transaction commits the new job, so
    concurrent submissions of one tenant are counted one after the other.
    """
    store.lock_tenant_admission(session, tenant=caller.tenant)
    num_active, tokens = store.tenant_usage(session, tenant=caller.tenant)
    if num_active >= caller.max_active_jobs:
        raise AdmissionRefused(429, f"tenant {caller.tenant!r} has {num_active} jobs queued or running, its limit; "
                                    "submit more when some finish", retry_after_s=TENANT_RETRY_AFTER_S)
    if tokens + max_tokens > caller.max_tokens_in_flight:
        raise AdmissionRefused(429, f"tenant {caller.tenant!r} has {tokens} tokens in flight; {max_tokens} more "
                                    f"would pass its limit of {caller.max_tokens_in_flight}; submit when jobs "
                                    "finish or lower max_tokens", retry_after_s=TENANT_RETRY_AFTER_S)


def _store_and_publish(settings: Settings, state, new: store.NewJob, admission: AdmissionPrediction | None,
                       caller: Caller, only_if_starts_at_once: bool = False) -> JobAccepted | None:
    """Store the job, then publish its first window. A failed publish leaves the job stored and queued: the reconciler
    publishes it later, so the job is never lost. `only_if_starts_at_once`: store it only if live workers have more
    slots than jobs queued or running (`store.starts_at_once`, checked under the idle-admission lock, held until the
    job is stored); None, with nothing stored, otherwise."""
    now = clock.now()
    url = settings.resolved_database_url
    tokens, score, fingerprint = (admission.tokens, admission.prior_score, admission.prior_fingerprint) \
        if admission is not None else (None, None, None)
    with session_scope(url) as session:
        _check_tenant_limits(session, caller, new.max_tokens)
        if only_if_starts_at_once:
            from elis.tasks.scheduling_setup import live_worker_s

            store.lock_idle_admission(session)
            if not store.starts_at_once(session, live_since=now - timedelta(seconds=live_worker_s(settings))):
                return None
        job = store.create_job(session, new=new, now=now, initial_prediction=tokens, prior_score=score,
                               prior_fingerprint=fingerprint)
        # The same scheduler (level edges, guard, aging) as every worker: admissions and continuations share
        # one queue.
        priority = stored_job_priority(job, state.scheduler, now)
        job_id = job.id
    try:
        publish_window(settings, job_id=job_id, window_index=0, priority=priority)
        with session_scope(url) as session:
            store.mark_published(session, job_id=job_id, window_index=0, priority=priority)
    except Exception as exc:
        log.error("publishing job %s failed (%s); the reconciler will re-publish it", job_id, exc)
    return JobAccepted(
        id=job_id, status=JobStatus.QUEUED.value, policy=new.policy, ordering=state.scheduler.ordering(new.policy),
        initial_prediction=tokens,
        priority=priority, url=f"/v1/jobs/{job_id}",
    )
