"""In-memory stand-ins, shipped for tests: synthetic dataset records and a predictor that needs no model.

`FakePredictor` has the `LengthPredictor` interface (predict, levels, window_tokens, metadata) and answers a
fixed guess minus what was generated, so the live stack's tests can run without torch weights.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from elis.predictor.features import PredictionInput
from elis.scheduling.levels import PriorityLevels

_TOPICS = ["the ocean", "a dragon", "tax law", "photosynthesis", "the moon", "jazz", "a bicycle", "coffee"]
_SHORT = ["Answer yes or no: is {t} blue?", "Give one word for {t}.", "Name the color of {t}."]
_LONG = [
    "Write a detailed essay about {t}.",
    "Explain {t} step by step in depth.",
    "Tell a long story about {t}.",
]


def fake_record(index: int, rng: random.Random, window: int = 50, source: str = "alpaca") -> dict[str, Any]:
    """A record in the build-dataset format whose output length follows its prompt (short vs long asks)."""
    topic = rng.choice(_TOPICS)
    long = rng.random() < 0.5
    prompt = rng.choice(_LONG if long else _SHORT).format(t=topic) + f" (#{index})"
    length = rng.randint(180, 400) if long else rng.randint(3, 40)
    words = [rng.choice(["the", "and", topic.split()[-1], "is", "very", "of", "it"]) for _ in range(length)]
    output_text = " ".join(words)
    offsets = [len(" ".join(words[: k * window])) for k in range((length - 1) // window + 1)]
    return {
        "id": f"fake-{index}",
        "source": source,
        "prompt": prompt,
        "prompt_ids": list(range(len(prompt.split()))),
        "output_ids": [rng.randint(5, 1000) for _ in range(length)],
        "output_text": output_text,
        "window_char_offsets": offsets,
        "window_tokens": window,
        "finish_reason": "stop",
        "max_tokens": 1024,
        "temperature": 0.7,
        "model": "fake",
    }


def fake_records(n: int, seed: int = 0, ood_every: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        fake_record(i, rng, source="seed_tasks" if ood_every and i % ood_every == 0 else "alpaca")
        for i in range(n)
    ]


def write_dataset(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


class FakePredictor:
    """Predicts `guess - num_generated` (at least 1); raises when `fail` is set."""

    def __init__(self, guess: float = 200.0, window_tokens: int = 50, fail: bool = False) -> None:
        self.guess = guess
        self.window_tokens = window_tokens
        self.fail = fail
        self.levels = PriorityLevels.log_spaced(10)
        self.metadata: dict[str, Any] = {"encoder": "fake", "window_tokens": window_tokens}
        self.batch_sizes: list[int] = []

    def predict(self, items: Sequence[PredictionInput]) -> list[float]:
        self.batch_sizes.append(len(items))
        if self.fail:
            raise RuntimeError("fake predictor failure")
        return [max(1.0, self.guess - item.num_generated) for item in items]


class FakeTokenizer:
    """Whitespace tokens with character offsets (the slice of the HF tokenizer API the text helpers use)."""

    sep_token = "[SEP]"

    def __call__(self, text: str, **_: Any) -> dict[str, list]:
        import re

        spans = [m.span() for m in re.finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


class FakeEncoder:
    """A deterministic stand-in for the frozen encoder: dimension 0 says whether the text asks for a long
    answer (the `fake_record` prompts' signal), the rest is a hash of the text. No weights."""

    name = "fake-encoder"
    max_length = 64

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.tokenizer = FakeTokenizer()
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> Any:
        import hashlib

        import numpy as np

        self.calls.append(len(texts))
        rows = []
        for text in texts:
            seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
            row = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32) * 0.1
            row[0] = 1.0 if any(w in text for w in ("essay", "step by step", "story")) else 0.0
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


class FakeEmbeddingCache:
    """`training.EmbeddingCache`'s interface over a `FakeEncoder` (no file)."""

    def __init__(self, encoder: FakeEncoder | None = None) -> None:
        self.encoder = encoder or FakeEncoder()

    def embed_texts(self, texts: Sequence[str]) -> Any:
        return self.encoder.encode(list(texts))
