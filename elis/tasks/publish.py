"""Publishing a job's next window with its priority. Every publish sets the priority (chains and retries
would drop it)."""

from __future__ import annotations

from elis.config import Settings

RUN_WINDOW_TASK = "elis.run_window"


def publish_window(settings: Settings, *, job_id: str, window_index: int, priority: int) -> None:
    """Send `run_window(job_id, window_index)` at a broker priority (higher = sooner). Raises on failure."""
    from elis.tasks.app import celery_app

    celery_app.send_task(
        RUN_WINDOW_TASK,
        args=[job_id, window_index],
        priority=priority,
        queue=settings.queue_name,
        routing_key=settings.queue_name,
    )
