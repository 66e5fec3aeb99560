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


def _content(value: object) -> str | None:
    """A turn's text: a string, or the text parts of OpenAI's list-of-parts content; None when it has none."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type", "text") == "text"]
        texts = [t for t in parts if isinstance(t, str)]
        return "\n".join(texts) if texts else None
    return None


def _role(turn: object) -> str | None:
    """A turn's OpenAI role (None: not a turn, or a role this service does not send, e.g. tool)."""
    if not isinstance(turn, dict):
        return None
    raw = turn.get("role") if turn.get("role") is not None else turn.get("from")
    return _ROLES.get(str(raw).lower()) if raw is not None else None


def _chat(turns: object, key: str, index: int, first_turn_only: bool) -> tuple[dict, ...]:
    """The turns to send: up to the last user turn (`messages`: the request as the file states it, earlier
    replies included), or only the first user turn with a system turn before it (a recorded conversation).
    Only the turns kept are checked, so a recorded reply that is malformed does not reject the record."""
    if not isinstance(turns, list) or not turns:
        raise PromptFileError(f"record {index}: '{key}' must be a non-empty list of {{role, content}} (or "
                              "{from, value}) objects")
    users = [i for i, t in enumerate(turns) if _role(t) == "user"]
    if not users:
        raise PromptFileError(f"record {index}: '{key}' has no user turn to send")
    last = users[0] if first_turn_only else users[-1]
    kept = []
    for number, turn in enumerate(turns[: last + 1]):
        role = _role(turn)
        if first_turn_only and role == "assistant":
            continue  # a reply before the first user turn (ShareGPT has some): not part of the request
        where = f"record {index}: '{key}' turn {number}"
        if role is None:
            raw = (turn.get("role") if turn.get("role") is not None else turn.get("from")) \
                if isinstance(turn, dict) else turn
            raise PromptFileError(f"{where}: role {raw!r} is not user, assistant or system")
        value = turn.get("content") if turn.get("content") is not None else turn.get("value")
        text = _content(value)
        if text is None:
            raise PromptFileError(f"{where}: content must be text (a string or a list of text parts), "
                                  f"not {type(value).__name__}")
        if role == "system" and text == "":
            continue  # an empty system turn (exports have them) says nothing, and the API refuses empty turns
        kept.append({"role": role, "content": text})
    return tuple(kept)


def _present(obj: dict, key: str) -> bool:
    return obj.get(key) is not None  # a null column of a mixed-schema export counts as absent


def _from_object(obj: dict, index: int, source: str) -> PromptItem:
    if not isinstance(obj, dict):
        raise PromptFileError(f"record {index}: must be a JSON object with {ACCEPTED}, not {type(obj).__name__}")
    if "custom_id" in obj and "body" in obj:  # a line of an OpenAI batch input file
        return _from_batch_line(obj, index, source)
    ids = [obj.get(k) for k in ("id", "conversation_id", "conversation_hash") if obj.get(k) is not None]
    item_id = str(ids[0]) if ids else f"{source}-{index}"
    if _present(obj, "messages"):
        return PromptItem(item_id, source, _chat(obj["messages"], "messages", index, first_turn_only=False))
    for key in ("conversations", "conversation"):  # ShareGPT; LMSYS-Chat and WildChat
        if _present(obj, key):
            return PromptItem(item_id, source, _chat(obj[key], key, index, first_turn_only=True))
    instruction = obj.get("instruction")
    if _present(obj, "instruction") and not (isinstance(instruction, str) and instruction.strip()):
        raise PromptFileError(f"record {index}: 'instruction' must be non-empty text")
    if _present(obj, "instances") and instruction is not None:  # Alpaca seed task: the first instance's input
        instances = obj["instances"]
        first = instances[0] if isinstance(instances, list) and instances else {}
        extra = first.get("input") if isinstance(first, dict) else None
        if not isinstance(instances, list) or not isinstance(first, dict) or not isinstance(extra or "", str):
            raise PromptFileError(f"record {index}: a seed task needs 'instruction' text and 'instances' as a list "
                                  "of {input, output} objects")
        return PromptItem(item_id, source, _user(_join(instruction, extra or "")))
    if instruction is not None:  # Alpaca; Dolly's "context"
        extra = obj.get("input") or obj.get("context") or ""
        return PromptItem(item_id, source, _user(_join(instruction, extra if isinstance(extra, str) else "")))
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


def read_text(path: Path, error: type[Exception] = PromptFileError, first_line: bool = False) -> str:
    """The whole text of a file, or with `first_line` only its first non-blank line (read no further: telling a
    file's format must not read a large set twice): UTF-8 (a byte-order mark is dropped), gzip-compressed or not
    (told by its first bytes, whatever its name). A file that cannot be read raises `error` naming it and why,
    never a traceback."""
    import gzip

    path = Path(path)
    if not path.exists():
        raise error(f"no such file: {path}")
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        if first_line:
            opener = gzip.open if compressed else open
            with opener(path, "rt", encoding="utf-8-sig") as handle:
                return next((line for line in handle if line.strip()), "")
        data = path.read_bytes()
        return (gzip.decompress(data) if compressed else data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except (OSError, EOFError) as exc:
        raise error(f"{path}: cannot read it ({exc})") from None


def read_prompts(path: Path, source: str | None = None) -> list[PromptItem]:
    """Prompts from a JSON list or a JSONL file (one object per line), either gzip-compressed or not."""
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"no such prompt file: {path}")
    source = source or Path(path.name.removesuffix(".gz")).stem
    text = read_text(path)
    try:
        if text.lstrip().startswith("["):
            objects = json.loads(text)
        else:
            objects = [json.loads(line) for line in text.split("\n") if line.strip()]
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
