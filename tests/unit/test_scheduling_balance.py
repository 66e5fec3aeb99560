"""Routing: the shared queue (live) and sticky pinning (measured in the simulator)."""

from __future__ import annotations

import pytest

from elis.scheduling import SharedQueue, Sticky, UnknownRoutingError, least_loaded, make_routing


def test_least_loaded_picks_the_smallest_load_and_the_lowest_index_on_ties():
    assert least_loaded([3, 1, 2, 1]) == 1
    with pytest.raises(ValueError):
        least_loaded([])


def test_sticky_pins_a_job_to_the_least_loaded_worker_until_forgotten():
    routing = Sticky()
    assert routing.admit("a", [2, 0, 1]) == 1
    assert routing.admit("b", [2, 1, 1]) == 1
    assert routing.worker_of("a") == 1
    routing.forget("a")
    assert routing.worker_of("a") is None


def test_the_shared_queue_pins_nothing():
    routing = make_routing("shared")
    assert isinstance(routing, SharedQueue) and routing.shared
    assert routing.admit("a", [0, 1]) is None and routing.worker_of("a") is None


def test_unknown_routing_fails_fast():
    with pytest.raises(UnknownRoutingError):
        make_routing("random")
