"""The live replay client: submit a workload to a running API at its arrival times, poll, collect records."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from tqdm import tqdm

from elis.prompts import read_prompts
from elis.replay.report import JobRecord, print_table

FINAL_STATUSES = {"done", "failed", "cancelled"}


class ReplayError(RuntimeError):
    """The API refused a job or did not finish the workload in time."""


@dataclass(frozen=True)
class ReplayJob:
    """One job of a live workload: when to submit it (seconds from the start) and what to send."""

    offset_s: float
    body: dict


def _seconds(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def record_of(detail: dict) -> JobRecord:
    """A JobRecord (the simulator's report format) from a job as GET /v1/jobs/{id} returns it."""
    arrival = _seconds(detail["arrival_at"]) or 0.0
    received = _seconds(detail.get("received_at"))
    finish = _seconds(detail["finished_at"])
    first = _seconds(detail["first_started_at"])
    waits = [
        (_seconds(w["started_at"]) or 0.0) - (_seconds(w["enqueued_at"]) or 0.0)
        for w in detail.get("windows", [])
        if w.get("enqueued_at")
    ]
    return JobRecord(
        job_id=detail["id"],
        policy=detail["policy"],
        arrival=arrival,
        first_start=first if first is not None else float("nan"),
        finish=finish if finish is not None else float("nan"),
        jct=detail["metrics"]["jct_s"] if detail["metrics"]["jct_s"] is not None else float("nan"),
        queuing_delay=detail["metrics"]["queuing_delay_s"],
        num_prompt_tokens=detail["num_prompt_tokens"],
        num_output_tokens=detail["num_output_tokens"],
        num_windows=detail["num_windows"],
        status=detail["status"],
        max_wait=max(waits, default=0.0),
        admission=max(0.0, arrival - received) if received is not None else 0.0,
    )


def submit_all(client: httpx.Client, jobs: Sequence[ReplayJob], label: str, progress: bool = True,
               max_in_flight: int = 16) -> list[str]:
    """Submit each job at its offset from now, several at once (as many clients would); returns the job ids
    in submission order."""

    def post(job: ReplayJob) -> str:
        response = client.post("/v1/jobs", json={**job.body, "workload": label})
        if response.status_code != 202:
            raise ReplayError(f"the API refused a job ({response.status_code}): {response.text[:300]}")
        return response.json()["id"]

    start = time.monotonic()
    futures = []
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool, \
            tqdm(total=len(jobs), desc=f"submit {label}", disable=not progress) as bar:
        for job in sorted(jobs, key=lambda j: j.offset_s):
            delay = job.offset_s - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            future = pool.submit(post, job)
            future.add_done_callback(lambda _: bar.update(1))
            futures.append(future)
        return [future.result() for future in futures]


def wait_for(client: httpx.Client, ids: Sequence[str], label: str, timeout_s: float, progress: bool = True) -> None:
    """Poll until every job of the workload reached a final status."""
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(ids), desc=f"finish {label}", disable=not progress) as bar:
        while True:
            page = client.get("/v1/jobs", params={"workload": label, "limit": 1000})
            page.raise_for_status()
            done = sum(1 for item in page.json()["items"] if item["status"] in FINAL_STATUSES)
            bar.update(done - bar.n)
            if done >= len(ids):
                return
            if time.monotonic() > deadline:
                raise ReplayError(f"{len(ids) - done} of {len(ids)} jobs unfinished after {timeout_s:.0f} s")
            time.sleep(0.5)


# NOTE: idle connections expire on the client well before the server drops them (uvicorn: 5 s keep-alive). With
# httpx's default of the same 5 s, a request sent on a connection the server was closing at that moment failed
# a whole live run with "Connection reset by peer" (2026-12-01, a gap of several seconds between arrivals).
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2.0)


def auth_headers(api_key: str | None = None) -> dict[str, str]:
    """The Authorization header for an API key (given, or ELIS_API_KEY); none when there is no key."""
    key = api_key if api_key is not None else os.environ.get("ELIS_API_KEY", "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def replay(
    base_url: str, jobs: Sequence[ReplayJob], label: str, timeout_s: float = 1800.0, progress: bool = True,
    api_key: str | None = None,
) -> list[JobRecord]:
    """Run a workload against a live API and return one record per job (`api_key`: ELIS_API_KEY if None)."""
    with httpx.Client(base_url=base_url, timeout=30.0, headers=auth_headers(api_key), limits=CLIENT_LIMITS) as client:
        ids = submit_all(client, jobs, label, progress)
        wait_for(client, ids, label, timeout_s, progress)
        details = [job_detail(client, job_id) for job_id in ids]
    return [record_of(d) for d in details]


def job_detail(client: httpx.Client, job_id: str) -> dict:
    """The job as GET /v1/jobs/{id} returns it (raises httpx.HTTPStatusError on an error answer)."""
    response = client.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    return response.json()


def prompt_jobs(path: Path, num: int | None, max_tokens: int, temperature: float, offsets: list[float] | None = None,
                target_lengths: list[int] | None = None, items: list | None = None) -> list[ReplayJob]:
    """Replay jobs from a prompt file (or its `items`, already read); all at once unless offsets are given."""
    items = read_prompts(path) if items is None else items
    if num is not None:
        items = [items[i % len(items)] for i in range(num)]
    jobs = []
    for i, item in enumerate(items):
        body: dict = {"messages": list(item.messages), "max_tokens": max_tokens, "temperature": temperature}
        if target_lengths is not None:
            body = {**body, "target_output_tokens": max(1, min(target_lengths[i], max_tokens))}
            body.pop("max_tokens")
        jobs.append(ReplayJob(offset_s=offsets[i] if offsets else 0.0, body=body))
    return jobs


def print_jobs(records: list[JobRecord]) -> None:
    """One line per job, shortest JCT first."""
    rows = [
        [r.job_id[:8], r.policy, r.status, r.num_prompt_tokens, r.num_output_tokens, r.num_windows,
         f"{r.queuing_delay:.2f}", f"{r.jct:.2f}"]
        for r in sorted(records, key=lambda r: r.jct)
    ]
    print_table(["job", "policy", "status", "prompt tok", "output tok", "windows", "queuing delay s", "JCT s"], rows,
                title="per-job results (sorted by JCT)")
