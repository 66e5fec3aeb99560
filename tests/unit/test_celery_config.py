"""The worker's Celery settings that keep a broker restart from stalling the threads pool (issue 11.5)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from elis.config import Settings
from elis.tasks.app import configure_celery


def test_broker_restart_settings():
    conf = configure_celery(Settings()).conf
    assert conf.broker_heartbeat == 10
    assert conf.broker_connection_max_retries is None
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    # The prefetch reduction after a reconnect restores the count from task threads (basic.qos on the
    # consumer's connection, off the event loop's thread): off.
    assert conf.worker_enable_prefetch_count_reduction is False


def test_prefetch_restoration_never_touches_the_channel():
    """What a task thread runs from its ack promise after a reconnect: with the reduction off, Celery's restore
    step returns before it sets the QoS (which would send basic.qos and read the consumer's socket)."""
    from celery.worker.consumer.consumer import Consumer

    app = configure_celery(Settings())
    calls: list[int] = []
    stub = SimpleNamespace(
        app=app,
        qos=SimpleNamespace(_mutex=threading.RLock(), value=1, set=calls.append),
        _maximum_prefetch_restored=False,
        max_prefetch_count=2,
        _new_prefetch_count=2,
        prefetch_multiplier=1,
    )
    Consumer._restore_prefetch_count_after_connection_restart(stub, None)
    assert calls == []
