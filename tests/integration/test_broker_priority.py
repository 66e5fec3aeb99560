"""Publishing against the real RabbitMQ: the priority queue serves the higher level first, FIFO within one."""

from __future__ import annotations

import pytest

from elis.tasks.app import configure_celery
from elis.tasks.publish import publish_window
from tests.integration.broker import drain

pytestmark = pytest.mark.integration


def test_windows_published_with_levels_are_delivered_highest_level_first_then_in_publish_order(settings):
    configure_celery(settings)
    published = [("a", 0, 2), ("b", 3, 8), ("c", 1, 2), ("d", 0, 9), ("e", 5, 8)]
    for job_id, window, level in published:
        publish_window(settings, job_id=job_id, window_index=window, priority=level)
    assert drain(settings) == [("d", 0, 9), ("b", 3, 8), ("e", 5, 8), ("a", 0, 2), ("c", 1, 2)]
