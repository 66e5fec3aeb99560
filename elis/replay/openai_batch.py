"""Reading OpenAI batch input files (JSONL): one request per line, `custom_id`, `method`, `url`, `body`.

Shared by the Batch API (elis.api.batches) and the replay/compare clients, so one input file means the same
jobs everywhere. Two kinds of problems, as OpenAI's Batch API has them:

- `BatchFileError`: the file is not JSONL (a line is not a JSON object). The whole batch fails at validation,
  and the message names the line.
- `BatchLineError`: the line is JSON but not a request we can run (unknown url, no messages, n > 1, ...).
  Only that request fails; the batch's error file gets a line saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
SUPPORTED_URLS = (CHAT_URL, COMPLETIONS_URL)

# Body fields accepted and passed on; `model`, `user`, `seed` and `stream_options` are accepted and ignored
# (one model is served; sampling seeds are the engine's).
_PASSED = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop"}
_IGNORED = {"model", "user", "seed", "n", "stream", "stream_options", "logprobs", "echo", "metadata", "store"}
_CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class BatchFileError(ValueError):
    """The input file cannot be read as JSONL; `line_number` is 1-based."""

    def __init__(self, line_number: int, message: str) -> None:
        super().__init__(f"line {line_number}: {message}")
        self.line_number = line_number


class BatchLineError(ValueError):
    """One request of the file is not runnable; `custom_id` is None when the line had none."""

    def __init__(
        self, line_number: int, custom_id: str | None, message: str, code: str = "invalid_request"
    ) -> None:
        super().__init__(f"line {line_number}: {message}")
        self.line_number = line_number
        self.custom_id = custom_id
        self.code = code


@dataclass(frozen=True)
class BatchRequest:
    """One runnable request of a batch file."""

    line_number: int
    custom_id: str
    url: str
    # Chat requests carry messages; completions a raw prompt (tokenized without a chat template).
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: dict = field(default_factory=dict)  # max_tokens, temperature, top_p, stop (only those given)

    @property
    def is_chat(self) -> bool:
        return self.url == CHAT_URL

    def job_body(self) -> dict:
        """The equivalent `POST /v1/jobs` body (replay and compare submit this).

        NOTE: /v1/jobs always applies the chat template, so a completions prompt becomes one user message
        there, while the Batch API tokenizes it raw as OpenAI's completions endpoint does.
        """
        content = {"messages": self.messages} if self.messages is not None else {"prompt": self.prompt}
        return {**content, **self.sampling}


def read_json_lines(data: bytes | str) -> list[tuple[int, dict]]:
    """Every non-blank line as (line number, object). Raises BatchFileError at the first line that is not a
    JSON object (the file is not JSONL)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchFileError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise BatchFileError(number, f"expected a JSON object, found {type(value).__name__}")
        rows.append((number, value))
    if not rows:
        raise BatchFileError(1, "the file has no requests")
    return rows


def parse_request(number: int, row: dict, endpoint: str | None = None) -> BatchRequest:
    """One line as a request. Raises BatchLineError saying what is wrong."""
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchLineError(number, None, "'custom_id' must be a non-empty string")

    def fail(message: str, code: str = "invalid_request") -> BatchLineError:
        return BatchLineError(number, custom_id, message, code)

    method = row.get("method", "POST")
    if method != "POST":
        raise fail(f"'method' must be POST, not {method!r}")
    url = row.get("url")
    if url not in SUPPORTED_URLS:
        raise fail(f"'url' must be one of {', '.join(SUPPORTED_URLS)}, not {url!r}", "invalid_url")
    if endpoint is not None and url != endpoint:
        raise fail(f"'url' is {url} but the batch's endpoint is {endpoint}", "mismatched_url")
    body = row.get("body")
    if not isinstance(body, dict):
        raise fail("'body' must be a JSON object")
    unknown = sorted(set(body) - _PASSED - _IGNORED - {"messages", "prompt"})
    if unknown:
        raise fail(f"unsupported body fields: {', '.join(unknown)}", "unsupported_parameter")
    if body.get("n", 1) != 1:
        raise fail("only n = 1 is supported", "unsupported_parameter")
    if body.get("stream"):
        raise fail("streaming is not available in a batch", "unsupported_parameter")
    sampling = {k: body[k] for k in ("temperature", "top_p", "stop") if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        sampling["max_tokens"] = max_tokens
    if url == CHAT_URL:
        return BatchRequest(number, custom_id, url, messages=_messages(body, fail), sampling=sampling)
    return BatchRequest(number, custom_id, url, prompt=_prompt(body, fail), sampling=sampling)


def parse_batch(
    data: bytes | str, endpoint: str | None = None
) -> tuple[list[BatchRequest], list[BatchLineError]]:
    """A whole file: the runnable requests and the per-line errors. Raises BatchFileError when the file is
    not JSONL or a custom_id repeats (OpenAI refuses such files too)."""
    requests: list[BatchRequest] = []
    errors: list[BatchLineError] = []
    seen: dict[str, int] = {}
    for number, row in read_json_lines(data):
        custom_id = row.get("custom_id")
        if isinstance(custom_id, str) and custom_id in seen:
            raise BatchFileError(number, f"custom_id {custom_id!r} repeats line {seen[custom_id]}")
        if isinstance(custom_id, str):
            seen[custom_id] = number
        try:
            requests.append(parse_request(number, row, endpoint))
        except BatchLineError as exc:
            errors.append(exc)
    return requests, errors


def _text_of(content, fail) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts can be served
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise fail("only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise fail("a message's 'content' must be a string or a list of text parts")


def _messages(body: dict, fail) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise fail("a chat request needs a non-empty 'messages' list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _CHAT_ROLES:
            raise fail(f"each message needs a role among {', '.join(_CHAT_ROLES)}")
        text = _text_of(message.get("content"), fail)
        if not text.strip():
            raise fail("a message's content is empty")
        out.append({"role": _CHAT_ROLES[message["role"]], "content": text})
    return out


def _prompt(body: dict, fail) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise fail("a completions request needs 'prompt' as one string")
    if not prompt.strip():
        raise fail("the prompt is empty")
    return prompt
