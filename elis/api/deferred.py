"""Admission predictions made after the job is queued, when the prediction cannot change where the job waits.

A job's admission prediction orders it in the queue. When live workers have a slot for it and for every queued job,
it starts at once whatever it is predicted; when the order in force does not read predictions (FCFS, srtf-oracle,
MLFQ, SJF while a guard holds FCFS order), it waits in arrival order whatever it is predicted. Either way the
prediction only feeds the quality guard and the worker's later decisions. On a CPU service the prediction is a
large part of a short job's life: run 47 (docs/compare.md) spent 0.48-0.73 s of a 2.8-3.3 s mean JCT in admission,
at a load where no job queued. Such a job is stored and published without it; one background thread predicts it
and stores the prediction (`storage.jobs.record_admission_prediction`), and the worker reads it at the job's first
window end if it was not there at the claim (`elis.tasks.windows`). When too many wait, an admission predicts its
own job (back-pressure), so no job is refused its prediction for a full queue.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from elis.storage import jobs as store
from elis.storage.db import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingPrediction:
    """What the background thread needs to predict one stored job."""

    job_id: str
    prompt: str
    max_tokens: int
    temperature: float


class DeferredPredictions(threading.Thread):
    """One daemon thread that predicts queued-without-a-prediction jobs in the order they came, and stores each
    prediction. A failure is logged and counted; the job keeps running without it (the worker predicts it when
    a decision needs one, as for a job whose admission prediction failed)."""

    def __init__(self, predictor, database_url: str, max_pending: int = 1000) -> None:
        super().__init__(name="elis-deferred-predictions", daemon=True)
        self.predictor = predictor
        self.database_url = database_url
        self.pending: queue.Queue[PendingPrediction | None] = queue.Queue(maxsize=max_pending)
        self.stored = 0
        self.failed = 0
        self.closed = False
        self._start_lock = threading.Lock()

    def submit(self, job: PendingPrediction) -> bool:
        """Queue a job's prediction (the thread starts at the first); False when too many wait or the API is
        stopping: the caller then predicts it itself (`predict_and_store`), so a full queue refuses no job its
        prediction and a flood of admissions cannot outrun the predictor. (`stored` and `failed`, counted from
        both, are for tests and logs: an increment lost to a race costs nothing.)"""
        with self._start_lock:
            if self.closed:
                return False
            if self.ident is None:
                self.start()
        try:
            self.pending.put_nowait(job)
            return True
        except queue.Full:
            log.debug("deferred admission predictions: %d waiting; job %s is predicted in its request",
                     self.pending.qsize(), job.job_id)
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """Take no more, and end the thread after the predictions already queued (waiting up to `timeout_s`)."""
        with self._start_lock:
            self.closed = True
            started = self.ident is not None
        if started:
            self.pending.put(None)
            self.join(timeout_s)
            if self.is_alive():
                log.warning("deferred admission predictions: %d still queued at shutdown", self.pending.qsize())

    def run(self) -> None:
        while True:
            job = self.pending.get()
            if job is None:
                return
            self.predict_and_store(job)

    def predict_and_store(self, job: PendingPrediction) -> bool:
        """Predict one job and store the prediction; True when stored."""
        prediction = self.predictor.predict(job.prompt, job.max_tokens, job.temperature)  # never raises
        if prediction is None:
            self.failed += 1
            return False
        try:
            with session_scope(self.database_url) as session:
                stored = store.record_admission_prediction(
                    session, job_id=job.job_id, tokens=prediction.tokens, prior_score=prediction.prior_score,
                    prior_fingerprint=prediction.prior_fingerprint)
        except Exception as exc:  # the database is away: the job runs on without its prediction
            self.failed += 1
            log.warning("deferred admission prediction of job %s not stored: %s", job.job_id, exc)
            return False
        self.stored += stored
        return stored
