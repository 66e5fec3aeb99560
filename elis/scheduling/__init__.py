"""The policy core: pure scheduling logic, standard library only (a test enforces it)."""

from elis.scheduling.balance import (
    Routing,
    SharedQueue,
    Sticky,
    UnknownRoutingError,
    least_loaded,
    make_routing,
)
from elis.scheduling.levels import PriorityLevels, calibrate_levels, remaining_length_targets
from elis.scheduling.policy import (
    AGED_SCORE,
    FCFS,
    ISRTF,
    MLFQ,
    SJF,
    Aging,
    JobView,
    LoopsLast,
    Policy,
    SRTFOracle,
    UnknownPolicyError,
    make_policy,
    policy_names,
    with_prediction,
)
from elis.scheduling.queue import PolicyQueue

__all__ = [
    "AGED_SCORE",
    "FCFS",
    "ISRTF",
    "MLFQ",
    "SJF",
    "Aging",
    "JobView",
    "LoopsLast",
    "Policy",
    "PolicyQueue",
    "PriorityLevels",
    "Routing",
    "SharedQueue",
    "Sticky",
    "UnknownRoutingError",
    "calibrate_levels",
    "least_loaded",
    "make_routing",
    "remaining_length_targets",
    "with_prediction",
    "SRTFOracle",
    "UnknownPolicyError",
    "make_policy",
    "policy_names",
]
