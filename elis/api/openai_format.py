"""OpenAI's object shapes: files, batches, and the lines of a batch's output and error files.

Pure functions over stored rows, so the shapes are unit-tested without a server.
"""

from __future__ import annotations

import json
from datetime import datetime

from elis.replay.openai_batch import CHAT_URL
from elis.storage.models import Batch, BatchStatus, Job, JobStatus, StoredFile

# Our finish reasons in OpenAI's words: EOS and stop strings are both "stop".
_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def file_object(stored: StoredFile) -> dict:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.num_bytes,
        "created_at": unix(stored.created_at),
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def request_counts(batch: Batch, job_counts: dict[str, int]) -> dict[str, int]:
    """total: lines of the file; completed: requests answered; failed: malformed lines, failed or cancelled
    requests (OpenAI has no third count)."""
    failed = (
        len(batch.line_errors or [])
        + job_counts.get(JobStatus.FAILED.value, 0)
        + job_counts.get(JobStatus.CANCELLED.value, 0)
    )
    return {
        # While its requests are being queued, the file's count is not stored yet: the jobs queued so far.
        "total": max(batch.num_requests, sum(job_counts.values())),
        "completed": job_counts.get(JobStatus.DONE.value, 0),
        "failed": failed,
    }


def batch_status(batch: Batch, job_counts: dict[str, int]) -> str:
    """The stored status, except that a batch whose file validated and whose first requests are queued reads
    `in_progress` while the rest are still being queued (which takes long when they wait for room under the
    tenant's limits), as OpenAI's batches leave `validating` once the file is checked."""
    if batch.status == BatchStatus.VALIDATING.value and sum(job_counts.values()) > 0:
        return BatchStatus.IN_PROGRESS.value
    return batch.status


def batch_object(batch: Batch, job_counts: dict[str, int]) -> dict:
    errors = None if not batch.errors else {"object": "list", "data": batch.errors}
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch_status(batch, job_counts),
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": unix(batch.created_at),
        "in_progress_at": unix(batch.in_progress_at),
        "expires_at": unix(batch.expires_at),
        "finalizing_at": unix(batch.finalizing_at),
        "completed_at": unix(batch.completed_at),
        "failed_at": unix(batch.failed_at),
        "expired_at": None,
        "cancelling_at": unix(batch.cancelling_at),
        "cancelled_at": unix(batch.cancelled_at),
        "request_counts": request_counts(batch, job_counts),
        "metadata": batch.batch_metadata,
    }


def completion_body(job: Job, endpoint: str, model: str) -> dict:
    """A finished job as the body of a chat.completion or text_completion response, with usage."""
    reason = _FINISH_REASONS.get(job.finish_reason or "", job.finish_reason)
    usage = {
        "prompt_tokens": job.num_prompt_tokens,
        "completion_tokens": job.num_output_tokens,
        "total_tokens": job.num_prompt_tokens + job.num_output_tokens,
    }
    created = unix(job.finished_at or job.arrival_at)
    if endpoint == CHAT_URL:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": job.output_text},
            "logprobs": None,
            "finish_reason": reason,
        }
        return {
            "id": f"chatcmpl-{job.id}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    choice = {"index": 0, "text": job.output_text, "logprobs": None, "finish_reason": reason}
    return {
        "id": f"cmpl-{job.id}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def output_line(job: Job, endpoint: str, model: str) -> dict:
    """A done job: a line of the output file."""
    return {
        "id": f"batch_req_{job.id}",
        "custom_id": job.custom_id,
        "response": {"status_code": 200, "request_id": job.id, "body": completion_body(job, endpoint, model)},
        "error": None,
    }


def job_error_line(job: Job) -> dict:
    """A failed or cancelled job: a line of the error file."""
    if job.status == JobStatus.CANCELLED.value:
        return {
            "id": f"batch_req_{job.id}",
            "custom_id": job.custom_id,
            "response": None,
            "error": {
                "code": "batch_cancelled",
                "message": "the batch was cancelled before this request finished",
            },
        }
    body = {
        "error": {
            "message": job.error or "the request failed",
            "type": "server_error",
            "param": None,
            "code": "generation_failed",
        }
    }
    return {
        "id": f"batch_req_{job.id}",
        "custom_id": job.custom_id,
        "response": {"status_code": 500, "request_id": job.id, "body": body},
        "error": None,
    }


def line_error_line(line_error: dict) -> dict:
    """A malformed input line (no job was created): a line of the error file."""
    return {
        "id": f"batch_req_line{line_error['line']}",
        "custom_id": line_error.get("custom_id"),
        "response": None,
        "error": {"code": line_error["code"], "message": line_error["message"], "line": line_error["line"]},
    }


def to_jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
