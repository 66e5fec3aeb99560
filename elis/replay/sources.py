"""Live workloads: turn a prompt file plus an arrival process into the `WorkItem`s a comparison submits.

Every function is deterministic in its seed, so each policy of a comparison gets the very same items.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from elis.prompts import PromptItem, read_prompts, sample
from elis.replay import workload as wl
from elis.replay.live import WorkItem

ARRIVALS = ("gamma", "poisson", "batch")


class WorkloadError(ValueError):
    """A workload file or option is unusable; the message names the file, the line and what is wrong."""


def arrival_offsets(num: int, arrivals: str, rate: float | None = None, cv: float | None = None,
                    seed: int = 0) -> list[float]:
    """Seconds from the start for `num` jobs: all at 0 (batch), Poisson at `rate`, or Gamma (the ELIS fit,
    shape 0.73 and scale 10.41, unless a rate, and optionally a CV, are given)."""
    if arrivals == "batch":
        return [0.0] * num
    if arrivals not in ARRIVALS:
        raise WorkloadError(f"--arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")
    if rate is not None and rate <= 0:
        raise WorkloadError("--rate must be positive")
    if cv is not None and cv <= 0:
        raise WorkloadError("--cv must be positive")
    if arrivals == "poisson" and rate is None:
        raise WorkloadError("poisson arrivals need --rate (jobs per second)")
    if arrivals == "gamma" and cv is not None and rate is None:
        raise WorkloadError("--cv needs --rate (without both, gamma uses the ELIS fit)")
    return [float(t) for t in wl.arrival_times(num, arrivals, rate=rate, cv=cv, seed=seed)]


def pick_prompts(items: Sequence[PromptItem], num: int | None, seed: int) -> list[PromptItem]:
    """`num` prompts: a seeded sample when the file has enough, else the file cycled; all when num is None."""
    if num is None:
        return list(items)
    if num <= len(items):
        return sample(list(items), num, seed)
    return [items[i % len(items)] for i in range(num)]


def body_of(messages: Sequence[dict], max_tokens: int, temperature: float,
            target_output_tokens: int | None = None) -> dict:
    """The POST /v1/jobs body of one item (a forced length replaces max_tokens)."""
    body: dict = {"messages": [dict(m) for m in messages], "temperature": temperature}
    if target_output_tokens is not None:
        body["target_output_tokens"] = max(1, int(target_output_tokens))
    else:
        body["max_tokens"] = max_tokens
    return body


def prompt_workload(path: Path, num: int | None, arrivals: str, rate: float | None, cv: float | None, seed: int,
                    max_tokens: int, temperature: float) -> list[WorkItem]:
    """Prompts from a JSON/JSONL file (prompt, messages or instruction) at the chosen arrivals."""
    from elis.prompts import PromptFileError

    try:
        prompts = pick_prompts(read_prompts(path), num, seed)
    except PromptFileError as exc:
        raise WorkloadError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc
    if not prompts:
        raise WorkloadError(f"{path}: no prompts")
    offsets = arrival_offsets(len(prompts), arrivals, rate, cv, seed)
    return [WorkItem(i, offsets[i], body_of(p.messages, max_tokens, temperature)) for i, p in enumerate(prompts)]
