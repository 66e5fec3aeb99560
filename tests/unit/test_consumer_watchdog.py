"""The consumer watchdog's rule and its request to the event loop, without a broker."""

from __future__ import annotations

import pytest

from elis.tasks.consumer_watchdog import (
    ConsumerSample,
    ConsumerWatchdog,
    StalledConsumer,
    _raise_if_same_connection,
    consumer_stalled,
)

SLOTS = 4


def sample(ready: int, held: int, deliveries: int) -> ConsumerSample:
    return ConsumerSample(ready=ready, held=held, deliveries=deliveries)


@pytest.mark.parametrize(
    ("before", "after", "stalled"),
    [
        (sample(3, 1, 10), sample(3, 1, 10), True),  # messages waited, a slot was free, nothing came
        (sample(3, 1, 10), sample(2, 2, 11), False),  # a delivery in between: fed
        (sample(3, 4, 10), sample(3, 4, 10), False),  # every slot busy: RabbitMQ rightly holds back
        (sample(0, 0, 10), sample(2, 0, 10), False),  # the messages arrived only now
        (sample(2, 0, 10), sample(0, 0, 10), False),  # another worker took them
        (None, sample(3, 0, 10), False),  # a first sample judges nothing
    ],
)
def test_stalled_only_when_messages_waited_a_whole_period_beside_a_free_slot(before, after, stalled):
    assert consumer_stalled(before, after, SLOTS) is stalled


class RecordingHub:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def call_soon(self, callback, *args) -> None:
        self.calls.append((callback, args))


class BlueprintStandIn:
    def __init__(self) -> None:
        from celery.bootsteps import RUN

        self.state = RUN


class ConsumerStandIn:
    """The attributes of Celery's consumer that the watchdog touches."""

    def __init__(self) -> None:
        self.hub = RecordingHub()
        self.connection = object()
        self.blueprint = BlueprintStandIn()


def watchdog_with(readings: list[int | None]) -> tuple[ConsumerWatchdog, ConsumerStandIn]:
    restarts: list[int] = []
    watchdog = ConsumerWatchdog(slots=SLOTS, period_s=1.0, ready_messages=lambda: readings.pop(0),
                                on_restart=lambda: restarts.append(1))
    consumer = ConsumerStandIn()
    watchdog._on_worker_ready(sender=consumer)
    return watchdog, consumer


def test_two_stalled_samples_ask_the_event_loop_to_reconnect_once():
    watchdog, consumer = watchdog_with([5, 5, 5])
    assert watchdog.check_once() is False  # the first sample
    assert watchdog.check_once() is True
    assert watchdog.restarts == 1
    [(callback, args)] = consumer.hub.calls
    assert callback is _raise_if_same_connection and args == (consumer, consumer.connection, watchdog, 0)
    # The next sample starts afresh: one more quiet period is needed before another request.
    assert watchdog.check_once() is False


def test_a_delivery_between_samples_or_the_broker_away_prevents_a_restart():
    watchdog, consumer = watchdog_with([5, 5, None, 5, 5])
    watchdog.check_once()
    watchdog._on_task_received()
    assert watchdog.check_once() is False
    assert watchdog.check_once() is False  # the broker could not be asked: the sample is dropped
    assert watchdog.check_once() is False  # so this one is again a first sample
    assert watchdog.check_once() is True
    assert len(consumer.hub.calls) == 1


def test_no_restart_while_celery_reconnects_or_across_two_connections():
    watchdog, consumer = watchdog_with([5, 5, 5, 5, 5])
    watchdog.check_once()
    consumer.connection = None  # Celery lost it and reconnects (with back-off): nothing is delivered, rightly
    assert watchdog.check_once() is False
    consumer.connection = object()  # the new connection: judged on its own samples
    assert watchdog.check_once() is False
    assert watchdog.check_once() is True
    consumer.blueprint.state = None  # the consumer is stopping
    assert watchdog.check_once() is False and watchdog.check_once() is False
    assert len(consumer.hub.calls) == 1


def test_no_check_before_the_worker_is_ready():
    watchdog = ConsumerWatchdog(slots=SLOTS, period_s=1.0, ready_messages=lambda: 5)
    assert watchdog.check_once() is False and watchdog.check_once() is False


def test_the_request_raises_a_connection_error_only_on_the_connection_it_judged():
    consumer = ConsumerStandIn()
    judged = consumer.connection
    with pytest.raises(ConnectionError):
        _raise_if_same_connection(consumer, judged)
    consumer.connection = object()  # Celery reconnected in the meantime
    _raise_if_same_connection(consumer, judged)
    consumer.connection = judged
    watchdog = ConsumerWatchdog(slots=SLOTS, period_s=1.0, ready_messages=lambda: 5)
    watchdog._on_task_received()  # a delivery came after the decision: the loop was slow, not stalled
    _raise_if_same_connection(consumer, judged, watchdog, 0)
    with pytest.raises(ConnectionError):
        _raise_if_same_connection(consumer, judged, watchdog, 1)
    consumer.blueprint.state = None  # or it is stopping
    _raise_if_same_connection(consumer, judged)
    assert issubclass(StalledConsumer, OSError)  # among py-amqp's connection_errors, so Celery reconnects


def test_a_worker_with_every_slot_busy_is_not_judged_and_the_broker_not_asked(monkeypatch):
    from elis.tasks import consumer_watchdog

    watchdog, consumer = watchdog_with([])  # any question to the broker would fail: none is left
    monkeypatch.setattr(consumer_watchdog, "_held_messages", lambda: SLOTS)
    assert watchdog.check_once() is False and watchdog.check_once() is False
    assert consumer.hub.calls == []
