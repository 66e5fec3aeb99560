"""The consumer watchdog: a worker whose broker connection went dead without Celery noticing reconnects.

Why (docs/robustness.md, issue 11.5): in one fresh-clone CI run, right after a RabbitMQ restart, the worker
logged "Connected", received two messages, failed to ack them ("connection already closed") and then
consumed nothing for 3 minutes. Its event loop sat idle in epoll: no read error, no failed heartbeat check,
nothing woke it. No Celery setting covers that case, so the worker checks from outside the connection what it
should be seeing:

    messages wait in the queue, this worker has a free slot, and it received nothing for a whole check period.

Two samples a period apart, both with messages ready and a free slot and no delivery in between, mean the
consumer is not being fed (a live consumer with a free slot gets a ready message within milliseconds). The
watchdog then asks the event loop, through the hub's thread-safe `call_soon`, to raise a connection error.
Celery's consumer treats that as a lost connection: it closes it, reconnects and consumes again, exactly as
after a broker restart. The windows in flight finish; their acks fail, RabbitMQ redelivers those messages and
the window compare-and-set turns each redelivery into a skip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from celery import signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSample:
    """What one check sees: messages ready in the queue, messages this worker holds (running or reserved,
    not yet acked), and how many messages it has received since it started."""

    ready: int
    held: int
    deliveries: int


def consumer_stalled(before: ConsumerSample | None, after: ConsumerSample, slots: int) -> bool:
    """True when, over the whole period between two samples, messages were ready, this worker had a free
    slot, and it received none of them.

    Without a delivery in between, the held count can only have fallen, so a free slot at the first sample
    means a free slot throughout.
    """
    if before is None:
        return False
    return (
        before.ready > 0
        and after.ready > 0
        and before.held < slots
        and after.deliveries == before.deliveries
    )


class StalledConsumer(ConnectionResetError):
    """Raised inside the worker's event loop to make Celery drop and re-open its broker connection."""


class ConsumerWatchdog(threading.Thread):
    """Samples the queue and this worker's consumer every `period_s`; restarts the consumer's connection when
    two samples in a row show it stalled (see `consumer_stalled`).

    `ready_messages` answers how many messages are ready in the queue (None when the broker cannot be asked:
    then there is nothing to judge, and the sample is dropped).
    """

    def __init__(self, *, slots: int, period_s: float, ready_messages: Callable[[], int | None],
                 on_restart: Callable[[], None] | None = None) -> None:
        super().__init__(name="elis-consumer-watchdog", daemon=True)
        self.slots = slots
        self.period_s = period_s
        self.ready_messages = ready_messages
        self.on_restart = on_restart
        self.stopped = threading.Event()
        self.deliveries = 0
        self.restarts = 0
        self.consumer = None  # Celery's consumer, known once the worker is ready
        self._previous: ConsumerSample | None = None
        self._connection = None  # the consumer's connection that `_previous` was taken on

    def install(self) -> ConsumerWatchdog:
        """Listen to the worker's signals: its consumer when it is ready, and each message it receives."""
        signals.worker_ready.connect(self._on_worker_ready, weak=False)
        signals.task_received.connect(self._on_task_received, weak=False)
        # A worker shutting down stops consuming on purpose: nothing to restart.
        signals.worker_shutting_down.connect(self._on_shutting_down, weak=False)
        return self

    def _on_shutting_down(self, **_) -> None:
        self.stopped.set()

    def _on_worker_ready(self, sender=None, **_) -> None:
        self.consumer = sender

    def _on_task_received(self, **_) -> None:
        self.deliveries += 1  # only the event loop's thread counts; the watchdog's thread only reads

    def run(self) -> None:
        while not self.stopped.wait(self.period_s):
            try:
                self.check_once()
            except Exception as exc:  # the watchdog must never take the worker down
                log.warning("consumer watchdog check failed: %r", exc)
        close = getattr(self.ready_messages, "close", None)  # a probe that keeps a connection releases it
        if close is not None:
            close()

    def check_once(self) -> bool:
        """Take one sample; request a reconnect when the consumer is stalled. True when one was requested."""
        consumer = self.consumer
        if consumer is None or getattr(consumer, "hub", None) is None:
            return False
        # Judge only a consumer that holds a connection and runs: while Celery reconnects (with back-off, after
        # a broker restart) its connection is None and nothing is delivered, rightly.
        connection = consumer.connection
        if connection is None or not _running(consumer):
            self._previous = self._connection = None
            return False
        if connection is not self._connection:  # a new connection: judged from its own samples only
            self._previous, self._connection = None, connection
        deliveries = self.deliveries  # before `held`: a delivery in between then counts as one
        held = _held_messages()
        if held >= self.slots:  # every slot busy: no stall now or over the next period; spare the broker a query
            self._previous = None
            return False
        ready = self.ready_messages()
        if ready is None:  # the broker is away: Celery's own reconnection handles that
            self._previous = None
            return False
        sample = ConsumerSample(ready=ready, held=held, deliveries=deliveries)
        stalled = consumer_stalled(self._previous, sample, self.slots)
        self._previous = sample
        if not stalled or self.stopped.is_set():
            return False
        self._previous = None  # judge the new connection afresh
        self.restarts += 1
        log.warning(
            "consumer stalled: %d messages ready, %d of %d slots busy, nothing received for %g s; "
            "reconnecting to the broker (watchdog restart %d)",
            sample.ready, sample.held, self.slots, self.period_s, self.restarts,
        )
        if self.on_restart is not None:
            self.on_restart()
        consumer.hub.call_soon(_raise_if_same_connection, consumer, connection, self, sample.deliveries)
        return True


def _running(consumer) -> bool:
    from celery.bootsteps import RUN
    from celery.worker import state

    blueprint = getattr(consumer, "blueprint", None)
    return (blueprint is not None and blueprint.state == RUN
            and not state.should_stop and not state.should_terminate)


def _raise_if_same_connection(consumer, connection, watchdog: ConsumerWatchdog | None = None,
                              deliveries: int | None = None) -> None:
    # Runs in the event loop. If the consumer has left that connection since the request (Celery's own
    # recovery got there first), is stopping, or has received a message since (the loop was only slow to run
    # this), there is nothing to restart.
    if watchdog is not None and deliveries is not None and watchdog.deliveries != deliveries:
        return
    if consumer.connection is connection and _running(consumer):
        raise StalledConsumer("consumer watchdog: no delivery while messages waited and slots were free")


def _held_messages() -> int:
    from celery.worker import state

    return len(state.reserved_requests)
