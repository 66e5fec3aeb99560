"""Readers for the workload files `elis compare` accepts. Each returns `Request`s in file order and raises
`WorkloadError` naming the file, the line and what is wrong (never a bare traceback).

- JSONL traces: one object a line with an arrival offset (`arrival`, `offset` or `timestamp`, seconds), a
  prompt (any record `elis.prompts` reads: `prompt`, `messages`, `instruction`, ...), optional `max_tokens`
  and optional `output_tokens`.
- Length traces as CSV: the Azure LLM inference trace (`TIMESTAMP, ContextTokens, GeneratedTokens`) and the
  BurstGPT layout (`Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type`). They hold no
  text, so each row becomes a filler prompt of about the recorded length and an output forced to it.
- Length traces as JSONL, the Mooncake layout (`timestamp` in MILLISECONDS, `input_length`, `output_length`,
  `hash_ids`; as NVIDIA Dynamo, AIPerf and AISBench replay it): filler prompts and forced outputs as above; a
  row's `input_text` (AISBench) or `text_input` (AIPerf), where given, is its prompt. `hash_ids` (shared
  prompt prefixes) are not reproduced.
- OpenAI batch input files: `custom_id`, `method`, `url` and `body` for /v1/chat/completions or
  /v1/completions (no arrival times: the comparison's arrival process sets them).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from elis.prompts import read_text

# A filler prompt: one-token words (in SmolLM2's tokenizer) after a short instruction. The instruction and the
# chat template add about FILLER_OVERHEAD tokens; the API reports the exact prompt length of every job.
FILLER_WORDS = ["time", "data", "system", "report", "table", "value", "river", "market", "city", "water", "number",
                "record", "order", "signal", "paper"]
FILLER_OVERHEAD = 34

# The keys a JSONL trace's arrival offset (seconds) may have, in order of preference.
TRACE_TIME_KEYS = ("arrival", "offset", "timestamp")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")


class WorkloadError(ValueError):
    """A workload file or option is unusable; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class Request:
    """One request read from a file: its arrival offset (None: the arrival process decides), the chat
    messages, and optionally its own max_tokens or a forced output length."""

    offset_s: float | None
    messages: tuple[dict, ...]
    max_tokens: int | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None  # the recorded prompt length (length traces)
    filler_key: int | None = None  # which filler prompt (length traces): each request's own words


def filler_messages(num_prompt_tokens: int, key: int | None = None) -> tuple[dict, ...]:
    """A user message of about `num_prompt_tokens` tokens after the chat template. With `key`, the words are
    drawn at random seeded by it, so that two requests' fillers share no prefix: the engine's prefix cache
    would otherwise hold every shorter filler as the start of a longer one, and a replayed trace's prefills,
    which real prompts pay in full, would come almost free."""
    count = max(1, num_prompt_tokens - FILLER_OVERHEAD)
    if key is None:
        words = " ".join(FILLER_WORDS[i % len(FILLER_WORDS)] for i in range(count))
    else:
        rng = random.Random(key)
        words = " ".join(rng.choice(FILLER_WORDS) for _ in range(count))
    return ({"role": "user", "content": f"Repeat these words: {words}"},)


def _where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def _positive_int(value: object, what: str, where: str, allow_zero: bool = False) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
        if number is None or (isinstance(value, float) and value != number):
            raise ValueError
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {what} must be a whole number, not {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise WorkloadError(f"{where}: {what} must be {'at least 0' if allow_zero else 'positive'}, not {number}")
    return number


def _messages_of(obj: dict, where: str) -> tuple[dict, ...]:
    from elis.prompts import PromptFileError, _from_object

    try:
        return _from_object(obj, 0, "file").messages
    except PromptFileError as exc:
        raise WorkloadError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None


def _json_lines(path: Path) -> list[tuple[int, dict]]:
    out = []
    # NOTE: split on "\n" only: str.splitlines also splits at U+2028, which JSON strings may hold raw.
    for number, line in enumerate(read_text(path, WorkloadError).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            what = f"not valid JSON ({exc.msg} at column {exc.colno})"
            raise WorkloadError(f"{_where(path, number)}: {what}") from None
        if not isinstance(obj, dict):
            raise WorkloadError(f"{_where(path, number)}: expected a JSON object, got {type(obj).__name__}")
        out.append((number, obj))
    if not out:
        raise WorkloadError(f"{path}: no requests in the file")
    return out


def read_jsonl_trace(path: Path) -> list[Request]:
    """A JSONL trace: arrival offsets (seconds; shifted so the first is 0), prompts, optional max_tokens and
    output_tokens (a forced length)."""
    path = Path(path)
    requests = []
    for number, obj in _json_lines(path):
        where = _where(path, number)
        key = next((k for k in TRACE_TIME_KEYS if k in obj), None)
        if key is None:
            raise WorkloadError(f"{where}: needs an arrival time ('arrival', 'offset' or 'timestamp', in seconds)")
        try:
            offset = float(obj[key])
        except (TypeError, ValueError):
            raise WorkloadError(f"{where}: '{key}' must be a number of seconds, not {obj[key]!r}") from None
        limit = obj.get("max_tokens")
        max_tokens = _positive_int(limit, "max_tokens", where) if limit is not None else None
        output = obj.get("output_tokens", obj.get("target_output_tokens"))
        output = _positive_int(output, "output_tokens", where) if output is not None else None
        requests.append(Request(offset, _messages_of(obj, where), max_tokens, output))
    start = min(r.offset_s for r in requests)
    return [Request(r.offset_s - start, r.messages, r.max_tokens, r.output_tokens) for r in requests]


def _timestamp(text: str) -> float:
    """Seconds: a number (BurstGPT) or a date and time (Azure, seven fractional digits)."""
    try:
        return float(text)
    except ValueError:
        head, _, fraction = text.strip().partition(".")
        return datetime.fromisoformat(head).timestamp() + (float("0." + fraction) if fraction else 0.0)


def read_length_csv(path: Path) -> list[Request]:
    """An Azure 2023 or BurstGPT CSV: filler prompts of the recorded length, outputs forced to the recorded
    length, arrivals from 0. BurstGPT rows with no response (failed requests) are skipped."""
    path = Path(path)
    with io.StringIO(read_text(path, WorkloadError), newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if tuple(header[:3]) == AZURE_COLUMNS:
            time_col, prompt_col, output_col = 0, 1, 2
        elif all(c in header for c in BURSTGPT_COLUMNS):
            time_col, prompt_col, output_col = (header.index(c) for c in
                                                ("Timestamp", "Request tokens", "Response tokens"))
        else:
            raise WorkloadError(f"{path}, line 1: unknown CSV header {header}; expected the Azure layout "
                                f"{', '.join(AZURE_COLUMNS)} or the BurstGPT layout {', '.join(BURSTGPT_COLUMNS)}")
        rows = []
        for number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            where = _where(path, number)
            if len(row) != len(header):
                raise WorkloadError(f"{where}: {len(row)} fields, the header has {len(header)}")
            try:
                arrival = _timestamp(row[time_col])
            except ValueError:
                raise WorkloadError(f"{where}: bad timestamp {row[time_col]!r}") from None
            prompt = _positive_int(row[prompt_col].strip(), header[prompt_col], where, allow_zero=True)
            output = _positive_int(row[output_col].strip(), header[output_col], where, allow_zero=True)
            if output == 0:
                continue  # a failed request: nothing was generated
            rows.append((arrival, max(1, prompt), output))
    if not rows:
        raise WorkloadError(f"{path}: no requests with a recorded output")
    start = min(r[0] for r in rows)
    return [Request(a - start, filler_messages(p, i), None, o, prompt_tokens=p, filler_key=i)
            for i, (a, p, o) in enumerate(rows)]


# A Mooncake row's own prompt text, where given: AISBench's key, then AIPerf's.
MOONCAKE_TEXT_KEYS = ("input_text", "text_input")


def read_mooncake_trace(path: Path) -> list[Request]:
    """A Mooncake JSONL length trace: `timestamp` (ms since the first request; optional, but on every row or on
    none: without it the arrival process decides), `input_length` (a filler prompt of that length, or the row's
    own text, `input_text` or `text_input`, where given), `output_length` (the output forced to it; 0 rows are
    skipped, as failed requests)."""
    path = Path(path)
    rows = []
    for number, obj in _json_lines(path):
        where = _where(path, number)
        text = next((obj[k] for k in MOONCAKE_TEXT_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
        if obj.get("input_length") is None and text is None:
            raise WorkloadError(f"{where}: a Mooncake trace row needs 'input_length' (or 'input_text')")
        if obj.get("output_length") is None:
            raise WorkloadError(f"{where}: a Mooncake trace row needs 'output_length'")
        output = _positive_int(obj["output_length"], "output_length", where, allow_zero=True)
        length = obj.get("input_length")
        length = None if length is None else max(1, _positive_int(length, "input_length", where, allow_zero=True))
        stamp = obj.get("timestamp")
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp < 0):
            raise WorkloadError(f"{where}: 'timestamp' must be milliseconds (a number at least 0), not {stamp!r}")
        rows.append((number, stamp, text, length, output))
    timed = [r[1] is not None for r in rows]
    if any(timed) and not all(timed):
        line = rows[timed.index(False)][0]
        raise WorkloadError(f"{_where(path, line)}: no 'timestamp', while other rows have one (all or none)")
    kept = [r for r in rows if r[4] > 0]
    if not kept:
        raise WorkloadError(f"{path}: no requests with a recorded output")
    start = min(r[1] for r in kept) if all(timed) else None
    # A row's text is its prompt as given (its recorded length, if any, is not needed: the API counts it).
    return [Request(None if start is None else (stamp - start) / 1000.0,
                    filler_messages(length, i) if text is None else ({"role": "user", "content": text},),
                    None, output, prompt_tokens=length if text is None else None, filler_key=i)
            for i, (_, stamp, text, length, output) in enumerate(kept)]


def estimated_prompt_tokens(request: Request) -> int:
    """A request's prompt tokens for a time scale: the recorded length, else about 4 characters a token."""
    return request.prompt_tokens or max(1, sum(len(m["content"]) for m in request.messages) // 4)


def read_openai_batch(path: Path) -> list[Request]:
    """An OpenAI batch input file, read line by line with the Batch API's own parser (elis.replay.openai_batch),
    so a file replays exactly as the service's /v1/batches would run it; max_tokens (or max_completion_tokens)
    kept. A completions prompt becomes one user message (/v1/jobs applies the chat template)."""
    from elis.replay.openai_batch import BatchLineError, parse_request

    path = Path(path)
    requests = []
    for number, obj in _json_lines(path):
        where = _where(path, number)
        try:
            request = parse_request(number, obj)
        except BatchLineError as exc:
            raise WorkloadError(f"{where}: {str(exc).removeprefix(f'line {number}: ')}") from None
        messages = tuple(request.messages or ({"role": "user", "content": request.prompt or ""},))
        limit = request.sampling.get("max_tokens")
        max_tokens = _positive_int(limit, "max_tokens", where) if limit is not None else None
        requests.append(Request(None, messages, max_tokens))
    return requests


def detect_kind(path: Path) -> str:
    """prompts | trace | lengths | openai-batch, from the extension and the first record."""
    path = Path(path)
    if path.name.lower().removesuffix(".gz").endswith(".csv"):
        return "lengths"
    head = read_text(path, WorkloadError, first_line=True).lstrip()
    if head.startswith("["):
        return "prompts"
    try:
        obj = json.loads(head)
    except json.JSONDecodeError:
        return "prompts"  # the prompt reader reports the bad line
    if isinstance(obj, dict) and "custom_id" in obj and "body" in obj:
        return "openai-batch"
    if isinstance(obj, dict) and "output_length" in obj and any(k in obj for k in ("input_length",
                                                                                  *MOONCAKE_TEXT_KEYS)):
        return "lengths"  # a Mooncake trace
    # A chat export's "timestamp" (WildChat) is when it was recorded, not an arrival offset in seconds.
    chat = isinstance(obj, dict) and any(k in obj for k in ("messages", "conversations", "conversation"))
    if isinstance(obj, dict) and any(k in obj for k in (("arrival", "offset") if chat else TRACE_TIME_KEYS)):
        return "trace"
    return "prompts"


def _starts_a_json_list(path: Path) -> bool:
    return read_text(path, WorkloadError, first_line=True).lstrip().startswith("[")


def read_requests(path: Path, kind: str = "auto") -> tuple[str, list[Request]]:
    """The requests of any supported file (kind auto: detected) and the kind read."""
    from elis.prompts import PromptFileError, read_prompts

    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "prompts" and not _starts_a_json_list(Path(path)):
        return kind, [Request(None, _messages_of(obj, _where(Path(path), n))) for n, obj in _json_lines(Path(path))]
    if kind == "prompts":  # a JSON list (Alpaca): errors name the record
        try:
            return kind, [Request(None, p.messages) for p in read_prompts(path)]
        except PromptFileError as exc:
            raise WorkloadError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    # A length trace is a CSV (Azure, BurstGPT) or JSONL (Mooncake), whatever the file is called.
    mooncake = read_text(path, WorkloadError, first_line=True).lstrip().startswith("{")
    lengths = read_mooncake_trace if mooncake else read_length_csv
    readers = {"trace": read_jsonl_trace, "lengths": lengths, "openai-batch": read_openai_batch}
    if kind not in readers:
        raise WorkloadError(f"unknown workload format {kind!r}; choose auto, prompts, {', '.join(readers)}")
    return kind, readers[kind](path)


def mean_lengths(requests: Sequence[Request], default_output: int) -> tuple[float, float]:
    """Mean prompt and output tokens (for the time scale of a length trace)."""
    prompts = [r.prompt_tokens or 64 for r in requests]
    outputs = [r.output_tokens or r.max_tokens or default_output for r in requests]
    return sum(prompts) / len(prompts), sum(outputs) / len(outputs)
