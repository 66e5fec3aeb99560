"""What the predictor sees: the ONE text join used in training and at serving, and the training examples.

A job at window k is described by its prompt, the text it has generated so far, and the number of tokens
generated so far. The encoder has a limited context (MiniLM: 256 tokens), so the join keeps the prompt's
head (what the task is) and the output's tail (where in the answer the job is), cut at token boundaries of
the encoder's own tokenizer:

    [CLS] prompt head [SEP] output tail [SEP]

The prompt keeps at most `prompt_budget` tokens when an output follows (all the room when none does); the
output tail gets the rest.

Besides the CLS embedding, a checkpoint may feed the head a few scalar features (`FEATURE_SETS`):
- `step`: tokens generated so far (log-scaled and linear), since a truncated tail no longer shows how long
  the answer already is;
- `repetition`: how repetitive the output's tail is (zlib compression ratio, distinct word 4-grams). A
  small model at temperature 0.7 often falls into a loop and runs to `max_tokens`; these two numbers flag
  such a loop far better than a sentence embedding does (measured in docs/predictor.md).
NOTE: the ELIS paper's head reads the embedding alone (feature set `cls`); the extra features depart from it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_PROMPT_BUDGET = 96  # encoder tokens kept from the prompt's head when an output follows


@dataclass(frozen=True)
class PredictionInput:
    """One job to predict for: its prompt, the text generated so far, and how many tokens that was."""

    prompt: str
    output_text: str = ""
    num_generated: int = 0
    # The job's token limit, when known: the prediction is capped at max_tokens - num_generated.
    max_tokens: int | None = None
    # The job's sampling temperature, when known (0: greedy; the loop rule trusts a greedy loop fully).
    temperature: float | None = None
    # The prompt prior's score of this prompt from admission, and that prior's fingerprint
    # (`serving.prior_fingerprint`): a predictor with the same prior reuses it instead of reading the prompt
    # again (the served model's states pass costs about a second on a CPU; the API pays it once per job).
    prior_score: float | None = None
    prior_fingerprint: str | None = None


@dataclass(frozen=True)
class Example:
    """One training example: a job at window `step`, and its true remaining tokens."""

    record_id: str
    prompt: str
    output_text: str
    num_generated: int
    step: int
    remaining: int
    max_tokens: int | None = None
    # Where the record came from (corpus records; empty for older datasets): for splits and the noise ceiling.
    prompt_id: str = ""
    source: str = ""
    sample: int = 0
    temperature: float | None = None


class _Tokenizer(Protocol):
    sep_token: str | None

    def __call__(self, text: Any, **kwargs: Any) -> Any: ...


def _cut_head(tokenizer: _Tokenizer, text: str, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of `text` holding at most `max_tokens` encoder tokens, and its token count."""
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text, len(offsets)
    if max_tokens <= 0:
        return "", 0
    return text[: offsets[max_tokens - 1][1]], max_tokens


def _cut_tail(tokenizer: _Tokenizer, text: str, max_tokens: int) -> str:
    """The shortest suffix of `text` holding the last `max_tokens` encoder tokens."""
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
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
    output_tokens = len(
        tokenizer(output_text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    )
    head, used = _cut_head(tokenizer, prompt, max(prompt_budget, room - output_tokens))
    tail = _cut_tail(tokenizer, output_text, room - used)
    return f"{head} {sep} {tail}"


TAIL_TOKENS = 64  # encoder tokens of the output's tail the ranker reads (about the last 50-token window)


def prompt_head(tokenizer: _Tokenizer, prompt: str, max_length: int) -> str:
    """The prompt as the ranker's prompt tower reads it: its head, within the encoder's length."""
    return _cut_head(tokenizer, prompt, max_length - 2)[0]


def output_tail(tokenizer: _Tokenizer, output_text: str, tail_tokens: int = TAIL_TOKENS) -> str:
    """The last `tail_tokens` encoder tokens of the output: about what the last window added."""
    return _cut_tail(tokenizer, output_text, tail_tokens) if output_text else ""


def step_feature(num_generated: int) -> float:
    """log1p of the tokens generated so far, scaled to about [0, 1]."""
    return math.log1p(max(num_generated, 0)) / math.log1p(1024)


REPETITION_TAIL_CHARS = 1500


def repetition_features(output_text: str) -> list[float]:
    """[zlib compression ratio, distinct word 4-gram ratio] of the output's last 1500 characters; both low
    in a loop, [1, 1] for outputs too short to judge."""
    tail = output_text[-REPETITION_TAIL_CHARS:].encode("utf-8")
    if len(tail) < 50:
        return [1.0, 1.0]
    ratio = min(len(zlib.compress(tail)) / len(tail), 1.5)
    words = tail.decode("utf-8", errors="ignore").split()
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    distinct = len(set(grams)) / len(grams) if grams else 1.0
    return [ratio, distinct]


TAIL_HASH_DIMS = 64
TAIL_HASH_CHARS = 1000
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tail_hash_features(output_text: str, dims: int = TAIL_HASH_DIMS) -> list[float]:
    """A cheap stand-in for encoding the output's tail (no transformer): the frequencies of its last 1000
    characters' word and punctuation tokens hashed into `dims` buckets (CRC32, stable across runs), then the
    fractions of digits, newlines and upper-case letters. Zeros before any output."""
    tail = output_text[-TAIL_HASH_CHARS:]
    if not tail:
        return [0.0] * (dims + 3)
    counts = [0.0] * dims
    tokens = _TOKEN.findall(tail.lower())
    for token in tokens:
        counts[zlib.crc32(token.encode("utf-8")) % dims] += 1.0
    total = max(len(tokens), 1)
    n = len(tail)
    return [c / total for c in counts] + [
        sum(ch.isdigit() for ch in tail) / n,
        tail.count("\n") / n,
        sum(ch.isupper() for ch in tail) / n,
    ]


class _HasOutput(Protocol):
    output_text: str
    num_generated: int


def _step(item: _HasOutput) -> list[float]:
    return [step_feature(item.num_generated), min(item.num_generated, 4096) / 1024.0]


def _repetition(item: _HasOutput) -> list[float]:
    return repetition_features(item.output_text)


FEATURE_SETS = {"cls": (), "cls+step": (_step,), "cls+step+repetition": (_step, _repetition)}
DEFAULT_FEATURE_SET = "cls+step+repetition"


def extra_features(feature_set: str, items: Sequence[_HasOutput]) -> list[list[float]]:
    """The scalar features the head reads after the embedding, one row per item."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose from {sorted(FEATURE_SETS)}")
    return [[v for fn in FEATURE_SETS[feature_set] for v in fn(item)] for item in items]


def cap_remaining(predicted: float, item: PredictionInput | Example) -> float:
    """Clamp a prediction to [0, max_tokens - num_generated] when the job's token limit is known."""
    value = max(0.0, predicted)
    if item.max_tokens:
        value = min(value, float(max(item.max_tokens - item.num_generated, 0)))
    return value


def window_char_offsets(decode: Callable[[list[int]], str], output_ids: Sequence[int], window_tokens: int) -> list[int]:
    """Offset k: where the text of the first k*W output tokens ends in the whole output's text, for every k
    with k*W < len(output).

    The length of the common prefix of decode(first k*W ids) and decode(all ids), not the length of the
    former: a window boundary may split a character's bytes (an emoji, a CJK character), whose partial
    decode is U+FFFD replacement characters. Counting those would let the text at step k include the
    character, or more, generated after it."""
    ids = list(output_ids)
    full = decode(ids)
    offsets = []
    for k in range((len(ids) - 1) // window_tokens + 1):
        prefix = decode(ids[: k * window_tokens])
        offsets.append(len(os.path.commonprefix([prefix, full])))
    return offsets


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
                max_tokens=record.get("max_tokens"),
                prompt_id=str(record.get("prompt_id", record["id"])),
                source=str(record.get("source", "")),
                sample=int(record.get("sample", 0)),
                temperature=_float_or_none(record.get("temperature")),
            )
        )
    return examples


def _float_or_none(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


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
