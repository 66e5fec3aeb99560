"""What the predictor sees: the ONE text join used in training and at serving, and the training examples.

A job at window k is described by its prompt, the text it has generated so far, and the number of tokens
generated so far. The encoder has a limited context (MiniLM: 256 tokens), so the join keeps the prompt's
head (what the task is) and the output's tail (where in the answer the job is), cut at token boundaries of
the encoder's own tokenizer:

    [CLS] prompt head [SEP] output tail [SEP]

The prompt keeps at most `prompt_budget` tokens when an output follows (all the room when none does); the
output tail gets the rest. The number of generated tokens is passed to the head as a separate feature
(`log1p(num_generated)`), since a truncated tail no longer shows how long the answer already is.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_PROMPT_BUDGET = 96  # encoder tokens kept from the prompt's head when an output follows


@dataclass(frozen=True)
class PredictionInput:
    """One job to predict for: its prompt, the text generated so far, and how many tokens that was."""

    prompt: str
    output_text: str = ""
    num_generated: int = 0


@dataclass(frozen=True)
class Example:
    """One training example: a job at window `step`, and its true remaining tokens."""

    record_id: str
    prompt: str
    output_text: str
    num_generated: int
    step: int
    remaining: int


class _Tokenizer(Protocol):
    sep_token: str | None

    def __call__(self, text: Any, **kwargs: Any) -> Any: ...


def _cut_head(tokenizer: _Tokenizer, text: str, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of `text` holding at most `max_tokens` encoder tokens, and its token count."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text, len(offsets)
    if max_tokens <= 0:
        return "", 0
    return text[: offsets[max_tokens - 1][1]], max_tokens


def _cut_tail(tokenizer: _Tokenizer, text: str, max_tokens: int) -> str:
    """The shortest suffix of `text` holding the last `max_tokens` encoder tokens."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    if max_tokens <= 0:
        return ""
    return text[offsets[len(offsets) - max_tokens][0] :]


def join_text(
    tokenizer: _Tokenizer,
    prompt: str,
    output_text: str,
    max_length: int,
    prompt_budget: int = DEFAULT_PROMPT_BUDGET,
) -> str:
    """The encoder's input for a job: prompt head, separator, output tail, within `max_length` tokens."""
    sep = tokenizer.sep_token or "\n"
    room = max_length - 3  # [CLS], the middle separator, the final [SEP]
    if not output_text:
        head, _ = _cut_head(tokenizer, prompt, max_length - 2)
        return head
    output_tokens = len(tokenizer(output_text, add_special_tokens=False, truncation=False)["input_ids"])
    head, used = _cut_head(tokenizer, prompt, max(prompt_budget, room - output_tokens))
    tail = _cut_tail(tokenizer, output_text, room - used)
    return f"{head} {sep} {tail}"


def step_feature(num_generated: int) -> float:
    """The head's extra input: log1p of the tokens generated so far, scaled to about [0, 1]."""
    return math.log1p(max(num_generated, 0)) / math.log1p(1024)


def examples_from_record(record: dict[str, Any]) -> list[Example]:
    """One example per window boundary k = 0..K (K * W < len(output)): target = len(output) - k * W."""
    window = int(record["window_tokens"])
    total = len(record["output_ids"])
    text = record["output_text"]
    examples = []
    for step, offset in enumerate(record["window_char_offsets"]):
        generated = step * window
        if generated >= total and step > 0:
            break
        examples.append(
            Example(
                record_id=str(record["id"]),
                prompt=record["prompt"],
                output_text=text[:offset],
                num_generated=generated,
                step=step,
                remaining=total - generated,
            )
        )
    return examples


def prompt_key(prompt: str) -> str:
    """The identity used to split by prompt: whitespace- and case-normalized text, hashed."""
    normalized = " ".join(prompt.split()).lower()
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()


def split_of(prompt: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic train / val / test assignment by prompt hash: equal prompts always share a split."""
    position = int(prompt_key(prompt)[:12], 16) / float(16**12)
    train, val = fractions[0], fractions[0] + fractions[1]
    if position < train:
        return "train"
    if position < val:
        return "val"
    return "test"


def flatten(records: Iterable[dict[str, Any]]) -> list[Example]:
    return [example for record in records for example in examples_from_record(record)]
