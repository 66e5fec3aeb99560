"""The policy core: pure scheduling logic, standard library only (a test enforces it)."""

from elis.scheduling.levels import PriorityLevels
from elis.scheduling.policy import (
    AGED_SCORE,
    FCFS,
    ISRTF,
    MLFQ,
    SJF,
    Aging,
    JobView,
    Policy,
    SRTFOracle,
    UnknownPolicyError,
    make_policy,
    policy_names,
)

__all__ = [
    "AGED_SCORE",
    "FCFS",
    "ISRTF",
    "MLFQ",
    "SJF",
    "Aging",
    "JobView",
    "Policy",
    "PriorityLevels",
    "SRTFOracle",
    "UnknownPolicyError",
    "make_policy",
    "policy_names",
]
