"""Prompt corpora: Alpaca JSON, the Alpaca seed tasks, and any JSONL of prompts or chat messages."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PromptFileError(ValueError):
    """A prompt file could not be read; the message says which line and why."""


@dataclass(frozen=True)
class PromptItem:
    """One prompt: an id, its source, and the chat messages to send (a single user turn for plain prompts)."""

    id: str
    source: str
    messages: tuple[dict, ...]

    @property
    def text(self) -> str:
        """The user-visible prompt text (the last user message)."""
        users = [m["content"] for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else self.messages[-1]["content"]


def _user(text: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": text},)


def _join(instruction: str, extra: str) -> str:
    return f"{instruction.strip()}\n\n{extra.strip()}" if extra and extra.strip() else instruction.strip()


def _from_object(obj: dict, index: int, source: str) -> PromptItem:
    if "custom_id" in obj and "body" in obj:  # a line of an OpenAI batch input file
        return _from_batch_line(obj, index, source)
    item_id = str(obj.get("id", f"{source}-{index}"))
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages
        ):
            raise PromptFileError(f"record {index}: 'messages' must be a list of {{role, content}} objects")
        return PromptItem(item_id, source, tuple({"role": m["role"], "content": m["content"]} for m in messages))
    if "instances" in obj and "instruction" in obj:  # Alpaca seed task
        instances = obj.get("instances") or [{}]
        return PromptItem(item_id, source, _user(_join(obj["instruction"], instances[0].get("input", ""))))
    if "instruction" in obj:  # Alpaca
        return PromptItem(item_id, source, _user(_join(obj["instruction"], obj.get("input", ""))))
    for key in ("prompt", "text", "question"):  # "question": GSM8K
        if isinstance(obj.get(key), str) and obj[key].strip():
            return PromptItem(item_id, source, _user(obj[key]))
    raise PromptFileError(f"record {index}: needs 'prompt', 'messages' or 'instruction'")


def _from_batch_line(obj: dict, index: int, source: str) -> PromptItem:
    """The request's messages (a completions prompt as one user turn); its sampling settings are the
    replay's own."""
    from elis.replay.openai_batch import BatchLineError, parse_request

    try:
        request = parse_request(index + 1, obj)
    except BatchLineError as exc:
        raise PromptFileError(f"record {index}: {exc}") from None
    return PromptItem(request.custom_id, source, tuple(request.messages or _user(request.prompt or "")))


def read_prompts(path: Path, source: str | None = None) -> list[PromptItem]:
    """Prompts from a JSON list or a JSONL file (one object per line)."""
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"no such prompt file: {path}")
    source = source or path.stem
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            objects = json.loads(text)
        else:
            objects = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{path}: not valid JSON or JSONL ({exc})") from exc
    items = [_from_object(obj, i, source) for i, obj in enumerate(objects)]
    return items


def sample(items: list[PromptItem], count: int, seed: int = 0) -> list[PromptItem]:
    """A deterministic sample (all items if count >= len)."""
    if count >= len(items):
        return list(items)
    return random.Random(seed).sample(items, count)


def iter_jsonl(path: Path) -> Iterator[dict]:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
