"""A real Celery worker (threads pool, the real RabbitMQ) whose consumer can be wedged on purpose, for the
consumer watchdog's test. Run as `python -m tests.integration.stall_worker QUEUE OUT_DIR WATCHDOG_S`.

Tasks:
- `touch(name)` writes OUT_DIR/name: the test sees which messages were consumed.
- `nap(seconds, name)` sleeps, then writes OUT_DIR/name: a busy worker.
- `wedge()` takes the consumer connection's socket out of the event loop's poller, from the loop's own thread.
  The worker then reads nothing more from the broker, and nothing tells it so: the signature of the stall seen
  in CI after a RabbitMQ restart (docs/robustness.md). AMQP heartbeats are off here, so the watchdog
  (WATCHDOG_S > 0) is the only way out; with WATCHDOG_S = 0 the worker stays stalled.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from celery import Celery

from elis.config import Settings
from elis.tasks.app import window_queue
from elis.tasks.consumer_watchdog import ConsumerWatchdog
from elis.tasks.recovery import QueueDepthProbe

SLOTS = 2


def main(queue: str, out_dir: str, watchdog_s: float) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(queue_name=queue, slots=SLOTS)
    app = Celery("stall-worker", set_as_current=True)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_heartbeat=0,  # nothing but the watchdog may notice the wedge
        broker_connection_retry_on_startup=True,
        task_queues=[window_queue(settings)],
        task_default_queue=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_enable_prefetch_count_reduction=False,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    watchdog = ConsumerWatchdog(slots=SLOTS, period_s=watchdog_s, ready_messages=QueueDepthProbe(settings))
    watchdog.install()

    @app.task(name="touch")
    def touch(name: str) -> None:
        (Path(out_dir) / name).write_text("done")

    @app.task(name="nap")
    def nap(seconds: float, name: str) -> None:
        time.sleep(seconds)
        (Path(out_dir) / name).write_text("done")

    @app.task(name="wedge")
    def wedge() -> None:
        consumer = watchdog.consumer

        def take_the_socket_out() -> None:  # on the event loop's thread
            consumer.hub.remove(consumer.connection.connection.sock)
            (Path(out_dir) / "wedged").write_text("done")

        consumer.hub.call_soon(take_the_socket_out)

    if watchdog_s > 0:
        watchdog.start()
    app.worker_main(["worker", "--pool=threads", f"--concurrency={SLOTS}", f"--queues={queue}",
                     "--loglevel=INFO", "--without-mingle", "--without-gossip", "--hostname=stall@%h"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
