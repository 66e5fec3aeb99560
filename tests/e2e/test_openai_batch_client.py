"""The Batch API driven by the official `openai` client against the live stack (API + worker + vLLM)."""

from __future__ import annotations

import json
import time

import pytest
from openai import OpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def request(custom_id: str, content: str, max_tokens: int) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "SmolLM2",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    }


def openai_client(stack, policy: str) -> OpenAI:
    with stack.api(policy) as http:
        base = str(http.base_url).rstrip("/")
    return OpenAI(base_url=f"{base}/v1", api_key="not-checked", max_retries=0)


def upload(client: OpenAI, lines: list) -> str:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return client.files.create(file=("batch.jsonl", text.encode()), purpose="batch").id


def wait_for(client: OpenAI, batch_id: str, statuses: set[str], timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout_s} s")


def jsonl(client: OpenAI, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_the_openai_client_runs_a_batch_and_reads_its_output_and_error_files(stack):
    client = openai_client(stack, "mlfq")
    file_id = upload(
        client,
        [
            request("capital", "What is the capital of France?", 12),
            {"custom_id": "broken", "method": "POST", "url": "/v1/chat/completions", "body": {}},
            request("haiku", "Write a haiku about rain.", 12),
        ],
    )
    assert client.files.retrieve(file_id).purpose == "batch"
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    outputs = {line["custom_id"]: line for line in jsonl(client, done.output_file_id)}
    assert sorted(outputs) == ["capital", "haiku"]
    for line in outputs.values():
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"].strip()
        assert 0 < body["usage"]["completion_tokens"] <= 12
    (error,) = jsonl(client, done.error_file_id)
    assert error["custom_id"] == "broken" and error["error"]["line"] == 2
    assert "messages" in error["error"]["message"]
    assert batch.id in [b.id for b in client.batches.list(limit=20).data]


def test_a_file_that_is_not_jsonl_fails_at_validation_through_the_client(stack):
    client = openai_client(stack, "mlfq")
    file_id = upload(client, [request("ok", "Hi", 4), "{this is not json"])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"}, timeout_s=60)
    assert failed.status == "failed"
    assert failed.errors.data[0].line == 2 and "not JSONL" in failed.errors.data[0].message


def test_cancelling_through_the_client_keeps_the_requests_that_finished(stack):
    client = openai_client(stack, "fcfs")  # FCFS: one request at a time on the one slot, so most are left
    file_id = upload(client, [request(f"r{i}", f"Count from {i} to {i + 40}.", 32) for i in range(6)])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 240
    while client.batches.retrieve(batch.id).request_counts.completed < 1:
        assert time.monotonic() < deadline, "no request finished"
        time.sleep(0.2)
    assert client.batches.cancel(batch.id).status in {"cancelling", "cancelled"}
    cancelled = wait_for(client, batch.id, {"cancelled"})
    counts = cancelled.request_counts
    assert counts.total == 6 and counts.completed >= 1 and counts.completed + counts.failed == 6
    outputs = jsonl(client, cancelled.output_file_id)
    assert len(outputs) == counts.completed and all(o["response"]["status_code"] == 200 for o in outputs)
    if counts.failed:
        assert {e["error"]["code"] for e in jsonl(client, cancelled.error_file_id)} == {"batch_cancelled"}
