"""Prompt corpora: Alpaca JSON, the Alpaca seed tasks, and any JSONL of prompts or chat messages.

A record is read by the first of these that it has:
- an OpenAI batch request line (`custom_id`, `body`);
- `messages` (OpenAI chat, UltraChat): the turns up to the last user turn; a recorded reply after it is dropped;
- `conversations` (ShareGPT: `from`/`value`) or `conversation` (LMSYS-Chat, WildChat: `role`/`content`): the
  first user turn, with a system turn before it; the replies that follow came from another model, so later
  turns would replay that model's words as context;
- `instruction` with `input` or `context` (Alpaca, Alpaca seed tasks with `instances`, Dolly);
- a text field: `prompt`, `text`, `question` (GSM8K), `problem` (MATH), `query` or `input`.
"""

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


# Role names of the chat datasets in the wild -> OpenAI's.
_ROLES = {"human": "user", "user": "user", "prompter": "user", "gpt": "assistant", "assistant": "assistant",
          "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
          "system": "system", "developer": "system"}
_TEXT_KEYS = ("prompt", "text", "question", "problem", "query", "input")  # "question": GSM8K, "problem": MATH
ACCEPTED = ("'prompt', 'text', 'question', 'problem', 'query', 'input', 'instruction', 'messages', "
            "'conversations' or 'conversation'")


def _turn(turn: object) -> dict | None:
    """One turn of any chat layout as {role, content}; None when it is not one."""
    if not isinstance(turn, dict):
        return None
    role = _ROLES.get(str(turn.get("role", turn.get("from", ""))).lower())
    content = turn.get("content", turn.get("value"))
    return {"role": role, "content": content} if role and isinstance(content, str) else None


def _chat(turns: object, key: str, index: int, first_turn_only: bool) -> tuple[dict, ...]:
    """The turns to send: up to the last user turn (`messages`), or the first one (a recorded conversation)."""
    parsed = [_turn(t) for t in turns] if isinstance(turns, list) else [None]
    if not parsed or any(t is None for t in parsed):
        raise PromptFileError(f"record {index}: '{key}' must be a list of {{role, content}} (or {{from, value}}) "
                              "objects with roles user, assistant or system")
    users = [i for i, t in enumerate(parsed) if t["role"] == "user"]
    if not users:
        raise PromptFileError(f"record {index}: '{key}' has no user turn to send")
    end = users[0] if first_turn_only else users[-1]
    if first_turn_only:  # a system turn before the first user turn stays; replies never come before it
        return tuple(t for t in parsed[: end + 1] if t["role"] in ("system", "user"))
    return tuple(parsed[: end + 1])


def _from_object(obj: dict, index: int, source: str) -> PromptItem:
    if not isinstance(obj, dict):
        raise PromptFileError(f"record {index}: must be a JSON object with {ACCEPTED}, not {type(obj).__name__}")
    if "custom_id" in obj and "body" in obj:  # a line of an OpenAI batch input file
        return _from_batch_line(obj, index, source)
    item_id = str(obj.get("id", obj.get("conversation_id", f"{source}-{index}")))
    if "messages" in obj:
        return PromptItem(item_id, source, _chat(obj["messages"], "messages", index, first_turn_only=False))
    for key in ("conversations", "conversation"):  # ShareGPT; LMSYS-Chat and WildChat
        if key in obj:
            return PromptItem(item_id, source, _chat(obj[key], key, index, first_turn_only=True))
    if "instances" in obj and "instruction" in obj:  # Alpaca seed task
        instances = obj.get("instances") or [{}]
        return PromptItem(item_id, source, _user(_join(obj["instruction"], instances[0].get("input", ""))))
    if isinstance(obj.get("instruction"), str) and obj["instruction"].strip():  # Alpaca; Dolly's "context"
        extra = obj.get("input") or obj.get("context") or ""
        return PromptItem(item_id, source, _user(_join(obj["instruction"], extra if isinstance(extra, str) else "")))
    for key in _TEXT_KEYS:
        if isinstance(obj.get(key), str) and obj[key].strip():
            return PromptItem(item_id, source, _user(obj[key]))
    raise PromptFileError(f"record {index}: needs {ACCEPTED} (with text)")


def _from_batch_line(obj: dict, index: int, source: str) -> PromptItem:
    """The request's messages (a completions prompt as one user turn); its sampling settings are the
    replay's own."""
    from elis.replay.openai_batch import BatchLineError, parse_request

    try:
        request = parse_request(index + 1, obj)
    except BatchLineError as exc:
        raise PromptFileError(f"record {index}: {exc}") from None
    return PromptItem(request.custom_id, source, tuple(request.messages or _user(request.prompt or "")))


def open_text(path: Path, newline: str | None = None):
    """A text file, or a gzip-compressed one (`.gz`), opened for reading as UTF-8."""
    import gzip

    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline=newline)
    return open(path, encoding="utf-8", newline=newline)


def read_prompts(path: Path, source: str | None = None) -> list[PromptItem]:
    """Prompts from a JSON list or a JSONL file (one object per line), either gzip-compressed or not."""
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"no such prompt file: {path}")
    source = source or Path(path.name.removesuffix(".gz")).stem
    with open_text(path) as handle:
        text = handle.read()
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
