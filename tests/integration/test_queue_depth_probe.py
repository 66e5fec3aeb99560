"""The consumer watchdog's queue-depth probe on the real RabbitMQ: it counts ready messages on one kept
connection, answers None while the broker cannot be asked, and replaces a dead connection within the same ask."""

from __future__ import annotations

import socket
import time

import pytest
from kombu import Connection

from elis.config import Settings
from elis.tasks.app import window_queue
from elis.tasks.recovery import QueueDepthProbe
from tests.conftest import BROKER_URL, delete_queue, unique_queue

pytestmark = pytest.mark.integration


@pytest.fixture()
def queue_settings():
    settings = Settings(broker_url=BROKER_URL, queue_name=unique_queue("elis.test.probe"))
    with Connection(BROKER_URL, connect_timeout=5) as connection:
        window_queue(settings)(connection.default_channel).declare()
    yield settings
    delete_queue(settings.queue_name)


def _publish(settings: Settings, count: int) -> None:
    # Publisher confirms: each message is in the queue when publish returns.
    with Connection(BROKER_URL, connect_timeout=5, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        for i in range(count):
            producer.publish({"n": i}, routing_key=settings.queue_name, priority=1)


def _settles_at(probe: QueueDepthProbe, expected: int, timeout_s: float = 5.0) -> int | None:
    """The probe's answer once it equals `expected` or the time is up (RabbitMQ's count can lag a publish)."""
    deadline = time.monotonic() + timeout_s
    answer = probe()
    while answer != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = probe()
    return answer


def test_the_probe_counts_ready_messages_on_one_kept_connection(queue_settings):
    probe = QueueDepthProbe(queue_settings)
    try:
        assert probe() == 0
        connection = probe._connection
        _publish(queue_settings, 3)
        assert _settles_at(probe, 3) == 3
        assert probe._connection is connection  # no new connection per ask
    finally:
        probe.close()


def test_the_probe_answers_none_when_the_broker_cannot_be_asked():
    probe = QueueDepthProbe(Settings(broker_url="amqp://guest:guest@127.0.0.1:1//", queue_name="elis.nowhere"))
    assert probe() is None
    assert probe._connection is None


def test_the_probe_reconnects_after_its_connection_broke(queue_settings):
    probe = QueueDepthProbe(queue_settings)
    try:
        assert probe() == 0
        probe._connection.connection.sock.shutdown(socket.SHUT_RDWR)  # the socket died, as in a broker restart
        _publish(queue_settings, 2)
        broken = probe._connection
        assert probe() is not None  # the same call found it dead and asked again on a fresh connection
        assert probe._connection is not None and probe._connection is not broken
        assert _settles_at(probe, 2) == 2
    finally:
        probe.close()
