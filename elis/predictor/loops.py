"""The loop rule: an output whose tail repeats itself is running to its token limit.

A small model under greedy decoding often falls into a loop ("He will sell 8 chickens ... 16 chickens ...")
and, decoding greedily, never leaves it: the job runs to max_tokens. That is a fact about decoding, not about
the prompt, so it holds on traffic the predictor never saw. The learned predictor sees a loop only through
coarse repetition features and keeps predicting a short remainder (left-out gsm8k, greedy: tau 0.02 at
step 4; docs/predictor.md, "The loop rule").

Detection works on the decoded text with every number replaced by one placeholder, so a loop whose numbers count
up ("2 * 40 = 80", "2 * 80 = 160") is a loop too; list enumerators at a line's start are kept, since a numbered
list counts towards a stated end. The masked tail must repeat with some period p for at least max(min_span,
(min_repeats - 1) * p) characters (min_repeats 2: the unit, then the unit again). Measured (`elis predictor
loops`): greedy, at max_tokens 1024 on 1,000 outputs of four sources, 172 of the 181 flagged outputs ran to their
limit (0.95; code examples repeated and then closed were most of the 9 that did not) and 90% of those that ran to
it were flagged; asking for 3 or 4 copies of the unit instead of 2 left 8 or 5 such escapes but flagged later and
ranked worse on every source (docs/predictor.md). At temperature 0.7, 68-91% of flagged outputs ran to their limit
(sampling can leave a loop), so sampled jobs get a share of the limit, not all of it.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Protocol

# A list enumerator at a line's start ("3." or "3)") is kept: a numbered list counts towards a stated number
# of items ("Here are five examples") and ends there; every other number is masked.
NUMBER_OR_ENUMERATOR = re.compile(r"(?m)(^[ \t]*\d+[.)])|\d+(?:[.,]\d+)*")
GREEDY_TEMPERATURE = 1e-5  # at or below this, decoding is greedy (vLLM treats it so)


def is_greedy(temperature: float | None) -> bool:
    """Whether a job decodes greedily (an unknown temperature is not taken for greedy)."""
    return temperature is not None and temperature <= GREEDY_TEMPERATURE


def masked(text: str) -> str:
    """The text with every number (digits, with inner . or ,) replaced by '#', except list enumerators."""
    return NUMBER_OR_ENUMERATOR.sub(lambda m: m.group(1) or "#", text)


MIN_SPAN = 100  # characters the masked tail must repeat over, at the least
MAX_PERIOD = 1500  # the longest repeating unit looked for, in masked characters
MIN_REPEATS = 2  # copies of the unit the tail must hold (2: the unit once, then once again)


def loop_period(text: str, min_span: int = MIN_SPAN, max_period: int = MAX_PERIOD,
                min_repeats: int = MIN_REPEATS) -> int | None:
    """The smallest period p (in masked characters) with which the text's tail repeats for at least
    max(min_span, (min_repeats - 1) * p) characters, so that it holds min_repeats copies of the unit; None when it
    does not repeat."""
    if min_repeats < 2:
        raise ValueError(f"min_repeats must be at least 2 (the unit and one copy), not {min_repeats}")
    tail = masked(text[-((min_repeats + 2) * max_period + 2 * min_span):])
    n = len(tail)
    last = tail[-8:]
    for period in range(1, max_period + 1):
        span = max(min_span, (min_repeats - 1) * period)
        if n < span + period:
            return None
        # cheap test first: the last 8 characters must recur `period` earlier (most periods fail here)
        if tail[n - 8 - period:n - period] == last and tail[n - span:] == tail[n - span - period:n - period]:
            return period
    return None


class _Job(Protocol):
    output_text: str
    num_generated: int
    max_tokens: int | None
    temperature: float | None


@dataclass(frozen=True)
class LoopRule:
    """Raise the prediction of a looping job towards its remaining token budget.

    greedy_share: the share of the budget a looping greedy job is predicted to use (1.0: all of it, since
    a greedy loop is absorbing); sampled_share: the same for a sampled job (or one of unknown temperature).
    The rule only raises a prediction, never lowers it."""

    min_span: int = MIN_SPAN
    max_period: int = MAX_PERIOD
    min_repeats: int = MIN_REPEATS
    greedy_share: float = 1.0
    sampled_share: float = 0.8

    def share(self, temperature: float | None) -> float:
        return self.greedy_share if is_greedy(temperature) else self.sampled_share

    def apply(self, predicted: float, job: _Job) -> float:
        if not job.max_tokens or not job.output_text:
            return predicted
        share = self.share(job.temperature)
        if share <= 0 or loop_period(job.output_text, self.min_span, self.max_period, self.min_repeats) is None:
            return predicted
        budget = float(max(job.max_tokens - job.num_generated, 0))
        return max(predicted, share * budget + (1.0 - share) * min(predicted, budget))

    def apply_all(self, predicted, jobs) -> list[float]:
        return [self.apply(float(p), job) for p, job in zip(predicted, jobs)]


class _PrecisionRecall:
    """precision and recall from the counts `flagged`, `flagged_capped` and `capped` of a dataclass."""

    flagged: int
    flagged_capped: int
    capped: int

    @property
    def precision(self) -> float:
        """Of the flagged outputs, the share that ran to max_tokens."""
        return self.flagged_capped / self.flagged if self.flagged else float("nan")

    @property
    def recall(self) -> float:
        """Of the outputs that ran (or would run) to max_tokens, the share flagged."""
        return self.flagged_capped / self.capped if self.capped else float("nan")


@dataclass(frozen=True)
class LoopCount(_PrecisionRecall):
    """At one window boundary: outputs still running, those flagged as looping, and how they ended."""

    step: int
    running: int
    flagged: int
    flagged_capped: int
    capped: int


def loop_counts(records, max_step: int = 12, min_span: int = MIN_SPAN, max_period: int = MAX_PERIOD,
                min_repeats: int = MIN_REPEATS) -> list[LoopCount]:
    """Precision and recall of loop detection per window boundary, on build-dataset records (output_text,
    window_char_offsets, finish_reason 'length' when the output hit max_tokens)."""
    counts = []
    for step in range(1, max_step + 1):
        running = flagged = flagged_capped = capped = 0
        for record in records:
            offsets = record["window_char_offsets"]
            if step >= len(offsets):
                continue
            running += 1
            ran_to_limit = record.get("finish_reason") == "length"
            hit = loop_period(record["output_text"][: offsets[step]], min_span, max_period, min_repeats) is not None
            capped += ran_to_limit
            flagged += hit
            flagged_capped += hit and ran_to_limit
        if running:
            counts.append(LoopCount(step, running, flagged, flagged_capped, capped))
    return counts


@dataclass(frozen=True)
class LoopSummary(_PrecisionRecall):
    """Per output, over its window boundaries up to max_step: how many outputs the detector flagged at any of
    them, how many of those ran to max_tokens, how many ran to max_tokens in all, and at which step each flagged
    output that ran to max_tokens was first flagged."""

    outputs: int
    capped: int
    flagged: int
    flagged_capped: int
    first_flag_steps: tuple[int, ...]  # of the flagged outputs that ran to max_tokens

    @property
    def escaped(self) -> int:
        """Flagged outputs that ended before max_tokens (the rule's false positives)."""
        return self.flagged - self.flagged_capped

    @property
    def median_first_step(self) -> float:
        """The median step of the first flag, of the flagged outputs that ran to max_tokens."""
        return float(statistics.median(self.first_flag_steps)) if self.first_flag_steps else float("nan")


def first_flag_step(record: dict, max_step: int | None = None, min_span: int = MIN_SPAN,
                    max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS) -> int | None:
    """The first window boundary (1..max_step, or every one inside the output when None) at which the detector
    flags a build-dataset record (output_text, window_char_offsets); None if never."""
    offsets = record["window_char_offsets"]
    last = len(offsets) if max_step is None else min(len(offsets), max_step + 1)
    for step in range(1, last):
        if loop_period(record["output_text"][: offsets[step]], min_span, max_period, min_repeats) is not None:
            return step
    return None


def loop_summary(records, max_step: int = 12, min_span: int = MIN_SPAN, max_period: int = MAX_PERIOD,
                 min_repeats: int = MIN_REPEATS) -> LoopSummary:
    """Per-output precision and recall of the detector with these parameters (see LoopSummary)."""
    capped = flagged = flagged_capped = 0
    first_steps = []
    for record in records:
        ran_to_limit = record.get("finish_reason") == "length"
        first = first_flag_step(record, max_step, min_span, max_period, min_repeats)
        capped += ran_to_limit
        flagged += first is not None
        if first is not None and ran_to_limit:
            flagged_capped += 1
            first_steps.append(first)
    return LoopSummary(outputs=len(records), capped=capped, flagged=flagged, flagged_capped=flagged_capped,
                       first_flag_steps=tuple(first_steps))
