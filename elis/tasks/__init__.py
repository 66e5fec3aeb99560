"""Celery app, queue topology, the window task and publishing with priority."""
