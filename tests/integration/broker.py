"""Read what the service published, straight from the real RabbitMQ queue."""

from __future__ import annotations

from kombu import Connection

from elis.tasks.app import window_queue


def drain(settings, timeout_s: float = 2.0) -> list[tuple[str, int, int]]:
    """All messages in the queue, in the order RabbitMQ delivers them: (job_id, window_index, priority)."""
    out: list[tuple[str, int, int]] = []

    def on_message(body, message):
        args = body[0] if isinstance(body, (list, tuple)) else body["args"]
        out.append((args[0], args[1], message.properties.get("priority")))
        message.ack()

    with Connection(settings.broker_url, connect_timeout=5) as connection:
        with connection.Consumer(window_queue(settings), callbacks=[on_message], accept=["json"], prefetch_count=1):
            while True:
                try:
                    connection.drain_events(timeout=timeout_s)
                except TimeoutError:  # socket.timeout too (an alias since Python 3.10)
                    return out
