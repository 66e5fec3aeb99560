"""The Celery app and the queue topology: one classic RabbitMQ priority queue shared by all workers.

Settings are applied by `configure_celery` (called by the API, the worker start-up and the tests), or on
first use of the app's configuration (e.g. `celery -A elis.tasks.app:celery_app flower`).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from elis.config import Settings, get_settings

celery_app = Celery("elis", set_as_current=False)
_configured = False


def window_queue(settings: Settings) -> Queue:
    """The priority queue. Its x-max-priority is fixed at first declaration: changing the number of levels
    needs a new queue name (RabbitMQ answers PRECONDITION_FAILED otherwise)."""
    return Queue(
        settings.queue_name,
        Exchange(settings.queue_name, type="direct"),
        routing_key=settings.queue_name,
        queue_arguments={"x-max-priority": settings.num_priority_levels},
    )


def configure_celery(settings: Settings | None = None) -> Celery:
    global _configured
    settings = settings or get_settings()
    if _configured and celery_app.conf.broker_url != settings.broker_url:
        # A new broker: drop the cached connection and producer pools of the old one.
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
    celery_app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # A broker restart (docs/robustness.md): AMQP heartbeats every 10 s (Celery's default is 120 s) so a
        # dead or half-open connection is noticed in about 20 s, not minutes; reconnect forever, 4 s per try.
        broker_heartbeat=10,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=4,
        # With acks_late, windows still running when the connection drops cannot ack; RabbitMQ requeues their
        # messages and the window compare-and-set turns the redelivery into a skip. Cancelling them instead
        # is not possible in the threads pool (threads cannot be terminated), so they finish.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The broker-restart stall (issue 11.5, docs/robustness.md). With tasks running when the connection
        # drops, Celery lowers the prefetch count on reconnect and raises it again from the ack promise of the
        # next finished task (`Consumer._restore_prefetch_count_after_connection_restart`). In the threads
        # pool that promise runs in the task's thread, which then sends basic.qos on the consumer's connection
        # and reads its socket for qos-ok while the event loop reads the same socket. py-amqp connections are
        # not thread-safe (celery/py-amqp#267; kombu's QoS docstring leaves `update` to the main thread): the
        # two readers split frames, and py-spy caught the event loop spinning in amqp/transport.py `_read` for
        # the rest of a frame the task thread had taken, sending no heartbeats and consuming nothing until
        # RabbitMQ dropped the connection (25-40 s), or an UnexpectedFrame ended it. Without the reduction
        # only the event loop touches the consumer's connection; the cost is that right after a reconnect a
        # worker may reserve up to `slots` messages while windows from before the outage still finish. Turning
        # it off is the known workaround for this feature's troubles (celery/celery#10253, #9512).
        worker_enable_prefetch_count_reduction=False,
        # Publisher confirms: a continuation is never silently lost.
        broker_transport_options={"confirm_publish": True},
        task_queues=[window_queue(settings)],
        task_default_queue=settings.queue_name,
        task_queue_max_priority=settings.num_priority_levels,
        # RabbitMQ only reorders messages still in the queue: take one at a time, ack after the window.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # the database is the record of truth
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
    )
    _configured = True
    return celery_app


@celery_app.on_configure.connect
def _configure_on_first_use(sender, **kwargs) -> None:
    if not _configured:
        configure_celery()
