"""The background admission predictions' queue: it refuses a job when full or stopped, and the caller then predicts
it itself (elis.api.admission)."""

from __future__ import annotations

import threading

from elis.api.deferred import DeferredPredictions, PendingPrediction


class BlockingPredictor:
    """Holds the thread in its first prediction until released; predicts nothing (no database write)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def predict(self, prompt: str, max_tokens: int, temperature: float):
        self.started.set()
        self.release.wait(10)
        return None


def pending(n: int) -> PendingPrediction:
    return PendingPrediction(f"job{n}", "Name a lake.", 64, 0.0)


def test_a_full_queue_refuses_the_next_job_and_takes_jobs_again_once_it_drains():
    predictor = BlockingPredictor()
    deferred = DeferredPredictions(predictor, "sqlite://", max_pending=1)
    assert deferred.submit(pending(0))  # the thread takes it and blocks in the predictor
    assert predictor.started.wait(10)
    assert deferred.submit(pending(1))  # waits in the queue, now full
    assert not deferred.submit(pending(2))
    predictor.release.set()
    deferred.stop(timeout_s=10)
    assert not deferred.is_alive() and deferred.failed == 2  # both predicted: no prediction, nothing stored


def test_a_stopped_queue_refuses_every_job():
    deferred = DeferredPredictions(BlockingPredictor(), "sqlite://")
    deferred.stop()
    assert deferred.closed and not deferred.submit(pending(0)) and deferred.ident is None
