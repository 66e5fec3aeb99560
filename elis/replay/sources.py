"""Live workloads: turn a workload file plus an arrival process into the `WorkItem`s a comparison submits.

Every function is deterministic in its seed, so each policy of a comparison gets the very same items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from elis.replay import workload as wl
from elis.replay.live import WorkItem
from elis.replay.readers import (
    Request,
    WorkloadError,
    estimated_prompt_tokens,
    filler_messages,
    mean_lengths,
    read_requests,
)
from elis.simulator.engine_profile import EngineProfile

__all__ = ["ARRIVALS", "Workload", "WorkloadError", "arrival_offsets", "body_of", "build_workload"]

ARRIVALS = ("gamma", "poisson", "batch")


def arrival_offsets(num: int, arrivals: str, rate: float | None = None, cv: float | None = None,
                    seed: int = 0) -> list[float]:
    """Seconds from the start for `num` jobs: all at 0 (batch), Poisson at `rate`, or Gamma (the ELIS fit,
    shape 0.73 and scale 10.41, unless a rate, and optionally a CV, are given)."""
    if arrivals not in ARRIVALS:
        raise WorkloadError(f"--arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")
    if rate is not None and rate <= 0:
        raise WorkloadError("--rate must be positive")
    if cv is not None and cv <= 0:
        raise WorkloadError("--cv must be positive")
    if arrivals == "batch":
        return [0.0] * num
    if arrivals == "poisson" and rate is None:
        raise WorkloadError("poisson arrivals need --rate (jobs per second)")
    if arrivals == "gamma" and cv is not None and rate is None:
        raise WorkloadError("--cv needs --rate (without both, gamma uses the ELIS fit)")
    return [float(t) for t in wl.arrival_times(num, arrivals, rate=rate, cv=cv, seed=seed)]


def body_of(messages: Sequence[dict], max_tokens: int, temperature: float,
            target_output_tokens: int | None = None) -> dict:
    """The POST /v1/jobs body of one item (a forced length replaces max_tokens)."""
    body: dict = {"messages": [dict(m) for m in messages], "temperature": temperature}
    if target_output_tokens is not None:
        body["target_output_tokens"] = max(1, int(target_output_tokens))
    else:
        body["max_tokens"] = max_tokens
    return body


def _pick(requests: Sequence[Request], num: int | None, seed: int) -> list[Request]:
    """Without times: a seeded sample (all if num is None; the file cycled if it is shorter)."""
    if num is None:
        return list(requests)
    if num <= len(requests):
        picks = sorted(np.random.default_rng(seed).choice(len(requests), size=num, replace=False))
        return [requests[i] for i in picks]
    return [requests[i % len(requests)] for i in range(num)]


def _take_timed(requests: Sequence[Request], num: int | None) -> list[Request]:
    """With times: the first `num` in arrival order, the trace repeated (shifted in time) when too short."""
    ordered = sorted(requests, key=lambda r: r.offset_s or 0.0)
    if num is None or num <= len(ordered):
        return ordered[:num] if num is not None else ordered
    last = ordered[-1].offset_s or 0.0
    lap_s = last + (last / max(1, len(ordered) - 1))
    return [replace(ordered[i % len(ordered)], offset_s=(ordered[i % len(ordered)].offset_s or 0.0)
                    + (i // len(ordered)) * lap_s) for i in range(num)]


def _rescaled(offsets: list[float], rate: float) -> list[float]:
    span = offsets[-1] - offsets[0] if offsets else 0.0
    if len(offsets) < 2 or span <= 0:
        return offsets
    factor = (len(offsets) - 1) / (rate * span)
    return [(t - offsets[0]) * factor for t in offsets]


def capacity_rps(slots: int, mean_prompt: float, mean_output: float, profile: EngineProfile | None = None) -> float:
    """Requests/s one worker of this machine sustains: the engine cost profile's estimate (`profile`, e.g. the
    bundled one at the speed a worker measured; the bundled one as it is without)."""
    from elis.config import get_settings

    profile = profile or EngineProfile.load()
    return profile.capacity_rps(1, slots, get_settings().window_tokens, mean_prompt, mean_output)


# The words of a refusal for the model's context (counted apart from the other refusals).
CONTEXT_EXCEEDED = "exceed the model's context"
# At most this many tokens of chat template around the messages (SmolLM2's default system turn is about 20),
# and per turn (its role markers).
TEMPLATE_TOKENS = 64
TOKENS_PER_TURN = 8


class ContextCheck:
    """What the API would refuse of a request, judged before any policy runs: its model's context (prompt
    tokens with the chat template, plus the job's max_tokens), its max_tokens limit and its chat template. The
    API refuses such a job (422), which would stop a comparison midway, so `elis compare` leaves it out, the
    same for every policy. A one-turn prompt of few UTF-8 bytes surely fits (a token is at least one byte) and
    is not tokenized; others are, with the served model's tokenizer, loaded on first need
    (`tokenizer_factory`: an object with `encode_chat(messages)`, or None when this machine has no copy of the
    API's model: such prompts then pass unchecked, counted in `unchecked`). Answers are remembered (a load sweep
    asks again at every rate)."""

    def __init__(self, max_model_len: int, tokenizer_factory: Callable[[], Any],
                 max_tokens_limit: int | None = None) -> None:
        self.max_model_len = max_model_len
        self.max_tokens_limit = max_tokens_limit
        self._factory = tokenizer_factory
        self._tokenizer: Any = None
        self._loaded = False
        self._seen: dict[tuple, str | None] = {}
        self.tokenized = 0
        self.unchecked = 0

    def refusal(self, messages: Sequence[dict], max_tokens: int) -> str | None:
        """Why the API would refuse these messages with this max_tokens (None: it would not)."""
        if self.max_tokens_limit is not None and max_tokens > self.max_tokens_limit:
            return f"max_tokens {max_tokens} is above the service's limit of {self.max_tokens_limit}"
        key = (tuple((m["role"], m["content"]) for m in messages), max_tokens)
        if key not in self._seen:
            self._seen[key] = self._context_refusal(messages, max_tokens)
        return self._seen[key]

    def _context_refusal(self, messages: Sequence[dict], max_tokens: int) -> str | None:
        budget = self.max_model_len - max_tokens
        size = sum(len(m["content"].encode("utf-8")) for m in messages)
        if len(messages) == 1 and size + TEMPLATE_TOKENS + TOKENS_PER_TURN <= budget:
            return None
        if not self._loaded:
            self._tokenizer, self._loaded = self._factory(), True
        if self._tokenizer is None:
            self.unchecked += 1
            return None
        self.tokenized += 1
        try:
            tokens = len(self._tokenizer.encode_chat(list(messages)))
        except Exception as exc:  # noqa: BLE001 - the API refuses it the same way
            return f"the messages cannot be formatted with the model's chat template: {exc}"
        if tokens > budget:
            return (f"prompt ({tokens} tokens) and max_tokens ({max_tokens}) {CONTEXT_EXCEEDED} of "
                    f"{self.max_model_len} tokens")
        return None


@dataclass
class Workload:
    """The items every run submits, and how they were made (for the manifest)."""

    items: list[WorkItem]
    info: dict = field(default_factory=dict)


def request_body(request: Request, max_tokens: int, temperature: float,
                 max_prompt_tokens: int) -> tuple[dict, bool, bool]:
    """The POST /v1/jobs body of one request, as every run submits it: a length trace's prompt capped at
    `max_prompt_tokens` (a filler of that length), a forced output at `max_tokens`. Also whether each was capped."""
    messages, forced = request.messages, request.output_tokens
    capped_prompt = request.prompt_tokens is not None and request.prompt_tokens > max_prompt_tokens
    if capped_prompt:
        messages = filler_messages(max_prompt_tokens, request.filler_key)
    capped_output = forced is not None and forced > max_tokens
    if capped_output:
        forced = max_tokens
    return body_of(messages, request.max_tokens or max_tokens, temperature, forced), capped_prompt, capped_output


def _effective_max_tokens(body: dict) -> int:
    """The max_tokens the API holds the job to: its own, else a forced length (admission's rule)."""
    return int(body.get("max_tokens") or body.get("target_output_tokens") or 0)


def api_refusal(body: dict) -> str | None:
    """Why the API's request schema (elis.api.schemas.JobCreate) would refuse this body (422), or None."""
    from pydantic import ValidationError

    from elis.api.schemas import JobCreate

    try:
        JobCreate.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))
    return None


def refusal_of(body: dict, context: ContextCheck) -> str | None:
    """Why the API would refuse this POST /v1/jobs body (None: it would admit it): its schema, then the
    max_tokens it holds the job to against its limit, the chat template and the model's context."""
    return api_refusal(body) or context.refusal(body["messages"], _effective_max_tokens(body))


def _admissible(requests: list[Request], path: Path, info: dict, context: ContextCheck, max_tokens: int,
                temperature: float, max_prompt_tokens: int) -> list[Request]:
    """The requests the API would admit, judged on the bodies the runs will send: its schema (empty or
    over-long turns, NUL characters, lone surrogates), its max_tokens limit, the chat template and the model's
    context. The others are left out before any policy runs, counted in `info` with the first reason, so that
    a public set's odd record does not stop a comparison midway. A file the API admits whole is unchanged."""
    kept, reasons, too_long = [], [], 0
    for request in requests:
        body, _, _ = request_body(request, max_tokens, temperature, max_prompt_tokens)
        refusal = refusal_of(body, context)
        too_long += refusal is not None and CONTEXT_EXCEEDED in refusal
        if refusal is None:
            kept.append(request)
        else:
            reasons.append(refusal)
    if not kept:
        raise WorkloadError(f"{path}: the API would refuse every request; the first: {reasons[0]}")
    info.update(left_out=len(reasons), left_out_too_long=too_long, context_max_model_len=context.max_model_len,
                context_unchecked=context.unchecked)
    if reasons:
        info["left_out_first_reason"] = reasons[0]
    return kept


def sample_digest(requests: Sequence[Request]) -> str:
    """A short digest of the chosen requests in order: records name jobs by their place in the sample, so a run
    whose digest differs drew other requests (`--lengths-from` and `--bound-from` check it)."""
    import hashlib
    import json

    text = json.dumps([[list(m.items()) for m in r.messages] for r in requests], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def build_workload(path: Path, *, kind: str = "auto", num: int | None = None, arrivals: str = "gamma",
                   rate: float | None = None, cv: float | None = None, seed: int = 0, max_tokens: int = 256,
                   temperature: float = 0.0, slots: int = 4, load: float = 0.8,
                   max_prompt_tokens: int = 512, context: ContextCheck | None = None,
                   profile: EngineProfile | None = None) -> Workload:
    """Read any workload file and give every request its arrival and body.

    Files without times (prompts, OpenAI batch) get the arrival process (`arrivals`, `rate`, `cv`, `seed`).
    Traces keep their own offsets, rescaled to `rate` when given. Length traces (Azure, BurstGPT, Mooncake) are
    time-scaled to this machine: without `rate`, to `load` x the requests/s one worker with `slots` slots
    serves (the estimate of `profile`, the bundled engine profile without it). Their prompts are capped at
    `max_prompt_tokens` and their forced outputs at `max_tokens`; a request's own max_tokens is kept. With
    `context`, the requests the API would refuse are left out first (`_admissible`).
    """
    kind, requests = read_requests(Path(path), kind)
    if num is not None and num < 1:
        raise WorkloadError("--num must be at least 1")
    info: dict = {"file": str(path), "kind": kind, "rows_in_file": len(requests)}
    if context is not None:
        requests = _admissible(requests, path, info, context, max_tokens, temperature, max_prompt_tokens)
    # A length trace without times (a Mooncake file may have none) gets the arrival process, as prompts do.
    timed = kind in ("trace", "lengths") and requests[0].offset_s is not None
    chosen = _take_timed(requests, num) if timed else _pick(requests, num, seed)
    info["sample_digest"] = sample_digest(chosen)
    info["timed"] = timed
    if timed:
        offsets = [float(r.offset_s or 0.0) for r in chosen]
        start = min(offsets, default=0.0)  # the first row may have been left out: the run starts at its first
        offsets = [t - start for t in offsets]
        if rate is None and kind == "lengths":
            mean_prompt, mean_output = mean_lengths(
                [replace(r, prompt_tokens=min(estimated_prompt_tokens(r), max_prompt_tokens),
                         output_tokens=min(r.output_tokens or 1, max_tokens)) for r in chosen], max_tokens)
            profile = profile or EngineProfile.load()  # read once: the estimate and its source
            rate = load * capacity_rps(slots, mean_prompt, mean_output, profile)
            info["time_scale"] = f"load {load} x estimated capacity {rate / load:.3f} jobs/s"
            info["capacity_from"] = profile.source
        if rate is not None:
            if rate <= 0:
                raise WorkloadError("--rate must be positive")
            offsets = _rescaled(offsets, rate)
            info["rate"] = rate
        info["arrivals"] = "from the file"
    else:
        offsets = arrival_offsets(len(chosen), arrivals, rate, cv, seed)
        info["arrivals"] = arrivals
    items, clamped_prompts, clamped_outputs = [], 0, 0
    for index, (request, offset) in enumerate(zip(chosen, offsets, strict=True)):
        body, capped_prompt, capped_output = request_body(request, max_tokens, temperature, max_prompt_tokens)
        clamped_prompts, clamped_outputs = clamped_prompts + capped_prompt, clamped_outputs + capped_output
        items.append(WorkItem(index, offset, body))
    info.update(jobs=len(items), clamped_prompts=clamped_prompts, clamped_outputs=clamped_outputs,
                last_arrival_s=round(max(offsets), 2))
    return Workload(items, info)
