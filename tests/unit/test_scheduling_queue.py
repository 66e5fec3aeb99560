"""PolicyQueue: the policy's exact order (aging included) in O(log n), and the broker-level variant."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from elis.scheduling import (
    FCFS,
    ISRTF,
    SJF,
    Aging,
    JobView,
    PolicyQueue,
    PriorityLevels,
    make_policy,
    policy_names,
)

job_fields = st.tuples(
    st.integers(0, 40),  # arrival
    st.integers(0, 400),  # generated
    st.one_of(st.none(), st.integers(0, 600)),  # predicted remaining
    st.integers(1, 600),  # true remaining
    st.integers(0, 20),  # service time
)
operation = st.one_of(st.tuples(st.just("push"), job_fields), st.tuples(st.just("pop"), st.integers(0, 10)))


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(operation, max_size=60),
    name=st.sampled_from(policy_names()),
    max_wait=st.sampled_from([0, 1, 3, 10]),
    factor=st.sampled_from([0.0, 0.5]),
)
def test_pop_returns_the_job_with_the_smallest_sort_key_at_that_moment(ops, name, max_wait, factor):
    policy = make_policy(name, max_wait_s=max_wait, service_factor=factor if max_wait else 0.0)
    queue, queued, now, count = PolicyQueue(policy), {}, 0.0, 0
    for kind, value in ops:
        if kind == "push":
            arrival, generated, predicted, true_remaining, service = value
            count += 1
            job = JobView(f"j{999 - count}", min(arrival, now), generated, predicted, predicted, now, service,
                          true_remaining)
            queue.push(job, now)
            queued[job.job_id] = job
        else:
            now += value
            if not queued:
                assert queue.peek(now) is None
                continue
            expected = min(queued.values(), key=lambda j: policy.sort_key(j, now))
            got = queue.pop(now)
            assert got.job_id == expected.job_id
            del queued[got.job_id]
        assert len(queue) == len(queued)


def test_jobs_leave_in_isrtf_order_and_an_aged_job_jumps_ahead():
    queue = PolicyQueue(Aging(ISRTF(), max_wait_s=10.0))
    queue.push(JobView("long", 0.0, predicted_remaining=900.0, enqueued_at=0.0), 0.0)
    for i, remaining in enumerate([300.0, 100.0, 200.0]):
        queue.push(JobView(f"s{i}", 5.0, predicted_remaining=remaining, enqueued_at=5.0), 5.0)
    assert queue.pop(6.0).job_id == "s1"
    assert queue.num_aged(10.5) == 1
    assert [queue.pop(10.5).job_id for _ in range(3)] == ["long", "s2", "s0"]
    assert not queue


def test_a_queued_job_starves_by_the_bound_in_force_when_asked_not_the_one_it_was_pushed_under():
    queue = PolicyQueue(Aging(ISRTF(), max_wait_s=10.0))
    queue.push(JobView("long", 0.0, predicted_remaining=900.0, enqueued_at=0.0), 0.0)
    queue.push(JobView("short", 1.0, predicted_remaining=10.0, enqueued_at=1.0), 1.0)
    queue.policy = Aging(ISRTF(), max_wait_s=30.0)  # the bound grew with the queue while they waited
    assert queue.num_aged(20.0) == 0 and queue.peek(20.0).job_id == "short"
    queue.policy = Aging(ISRTF(), max_wait_s=5.0)  # and shrank
    assert queue.num_aged(20.0) == 2 and [queue.pop(20.0).job_id for _ in range(2)] == ["long", "short"]


def test_jobs_pushed_under_different_bounds_starve_in_the_order_of_the_bound_in_force():
    # Counted from arrival: "old" arrived at 90 and was re-queued at 105 under a bound of 50 (it would starve at
    # 140); "new" arrived at 100 and was queued under a bound of 10 (110). With the bound now 50, "old" starves
    # at 140 and "new" at 150: at 145 only "old" goes first.
    queue = PolicyQueue(Aging(ISRTF(), max_wait_s=10.0, since_arrival=True))
    queue.push(JobView("new", 100.0, predicted_remaining=10.0, enqueued_at=100.0), 100.0)
    queue.policy = Aging(ISRTF(), max_wait_s=50.0, since_arrival=True)
    queue.push(JobView("old", 90.0, predicted_remaining=900.0, enqueued_at=105.0), 105.0)
    assert queue.num_aged(145.0) == 1 and queue.pop(145.0).job_id == "old"


def test_with_broker_levels_jobs_of_one_level_leave_in_push_order():
    levels = PriorityLevels((100.0, 500.0))  # level 2: < 100, level 1: < 500, level 0: the rest
    queue = PolicyQueue(SJF(), levels)
    for job_id, arrival, prediction in [("late", 3.0, 450.0), ("early", 1.0, 120.0), ("huge", 0.0, 900.0),
                                        ("tiny", 4.0, 30.0)]:
        queue.push(JobView(job_id, arrival, initial_prediction=prediction, enqueued_at=5.0), 5.0)
    # Exact SJF would run "early" (120) before "late" (450); one broker level keeps publish order.
    assert [queue.pop(6.0).job_id for _ in range(4)] == ["tiny", "late", "early", "huge"]


def test_fcfs_queue_is_arrival_order_and_popping_empty_raises():
    queue = PolicyQueue(FCFS())
    for job_id, arrival in [("b", 2.0), ("a", 1.0), ("c", 3.0)]:
        queue.push(JobView(job_id, arrival), 3.0)
    assert [queue.pop(4.0).job_id for _ in range(3)] == ["a", "b", "c"]
    try:
        queue.pop(5.0)
    except IndexError:
        pass
    else:
        raise AssertionError("pop from an empty queue must raise")
