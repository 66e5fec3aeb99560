"""Run one workload against one live API: submit each job at its arrival time, show submitted / running / done
with an ETA, and collect one `LiveRecord` per job (the report's `JobRecord` plus the predictions per window).

Ctrl-C stops submitting, cancels the run's unfinished jobs (so they do not load the next run) and returns the
records collected so far; the caller writes them as a partial report.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpx
from tqdm import tqdm

from elis.replay.client import CLIENT_LIMITS, FINAL_STATUSES, ReplayError, auth_headers, job_detail, record_of
from elis.replay.report import JobRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    """One job of a workload: its position, when it arrives (seconds from the start) and the request body."""

    index: int
    offset_s: float
    body: dict


@dataclass(frozen=True)
class LiveRecord:
    """What a live run keeps of one job: the report record, which workload item it was, and what the
    predictor said before the first window (`initial_prediction`) and after each window (`predictions`,
    remaining tokens; NaN where none was made), with the tokens each window generated."""

    record: JobRecord
    item: int
    initial_prediction: float = math.nan
    window_tokens: tuple[int, ...] = ()
    predictions: tuple[float, ...] = ()
    finish_reason: str = ""
    # Each window's engine time (s): how fast the engine ran during this job, whatever the order did.
    window_compute_s: tuple[float, ...] = ()

    @property
    def has_predictions(self) -> bool:
        return not math.isnan(self.initial_prediction) or any(not math.isnan(p) for p in self.predictions)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def live_record(detail: dict, item: int) -> LiveRecord:
    """A LiveRecord from a job as GET /v1/jobs/{id} returns it."""
    windows = sorted(detail.get("windows", []), key=lambda w: w["index"])
    return LiveRecord(
        record=record_of(detail),
        item=item,
        initial_prediction=_number(detail.get("initial_prediction")),
        window_tokens=tuple(int(w["num_tokens"]) for w in windows),
        predictions=tuple(_number(w.get("prediction_after")) for w in windows),
        finish_reason=detail.get("finish_reason") or "",
        window_compute_s=tuple(_number(w.get("compute_s")) for w in windows),
    )


EXTRA_COLUMNS = ("item", "initial_prediction", "window_tokens", "predictions", "finish_reason",
                 "window_compute_s")


def write_live_records(records: Sequence[LiveRecord], path: Path) -> None:
    """The report's records CSV (JobRecord columns first, so `read_records_csv` reads it) plus the item, the
    predictions (space-separated, one per window), the finish reason and each window's engine seconds."""
    names = [f.name for f in fields(JobRecord)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, *EXTRA_COLUMNS])
        for live in sorted(records, key=lambda r: r.item):
            writer.writerow([
                *(getattr(live.record, name) for name in names),
                live.item,
                live.initial_prediction,
                " ".join(str(n) for n in live.window_tokens),
                " ".join(f"{p:.2f}" for p in live.predictions),
                live.finish_reason,
                " ".join(f"{c:.4f}" for c in live.window_compute_s),
            ])


def read_live_records(path: Path) -> list[LiveRecord]:
    """Records written by `write_live_records` (a plain report CSV reads with empty predictions)."""
    casts = {f.name: f.type for f in fields(JobRecord)}
    optional = {"admission"}  # absent from records CSVs written before 2026-12-07
    out = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                values = {name: int(row[name]) if kind == "int" else float(row[name]) if kind == "float" else row[name]
                          for name, kind in casts.items() if name in row or name not in optional}
                out.append(LiveRecord(
                    record=JobRecord(**values),
                    item=int(row.get("item") or line - 2),
                    initial_prediction=float(row.get("initial_prediction") or "nan"),
                    window_tokens=tuple(int(t) for t in (row.get("window_tokens") or "").split()),
                    predictions=tuple(float(p) for p in (row.get("predictions") or "").split()),
                    finish_reason=row.get("finish_reason") or "",
                    window_compute_s=tuple(float(c) for c in (row.get("window_compute_s") or "").split()),
                ))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}, line {line}: not a records row ({exc})") from exc
    return out


@dataclass
class RunResult:
    """A finished or interrupted run: the records of every submitted job and whether it was cut short."""

    records: list[LiveRecord] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None
    submitted: int = 0
    wall_s: float = 0.0
    # How many jobs the API admitted under each order (its answer's `ordering`): a prediction policy whose
    # quality guard had fallen back shows "fcfs (guard fallback)" (or "prefill first (guard fallback)") here.
    orderings: dict[str, int] = field(default_factory=dict)


class _Submitter(threading.Thread):
    """Posts each item at its offset from the start (several at once, as many clients would)."""

    def __init__(self, client: httpx.Client, items: Sequence[WorkItem], label: str, max_in_flight: int = 8) -> None:
        super().__init__(daemon=True, name="elis-submit")
        self.client, self.items, self.label = client, sorted(items, key=lambda i: i.offset_s), label
        self.max_in_flight = max_in_flight
        self.ids: dict[int, str] = {}  # item index -> job id
        self.orderings: Counter[str] = Counter()  # the order each job was admitted under
        self.error: Exception | None = None
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _post(self, item: WorkItem) -> None:
        try:
            response = self.client.post("/v1/jobs", json={**item.body, "workload": self.label})
            if response.status_code != 202:
                raise ReplayError(f"the API refused item {item.index} ({response.status_code}): {response.text[:300]}")
            accepted = response.json()
            with self._lock:
                self.ids[item.index] = accepted["id"]
                self.orderings[accepted.get("ordering") or "unknown"] += 1
        except Exception as exc:  # noqa: BLE001  (reported by the main thread, which stops the run)
            self.error = self.error or exc
            self.stop.set()

    def run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            for item in self.items:
                if self.stop.wait(max(0.0, item.offset_s - (time.monotonic() - start))):
                    break
                pool.submit(self._post, item)

    @property
    def submitted(self) -> int:
        with self._lock:
            return len(self.ids)


def _statuses(client: httpx.Client, label: str) -> dict[str, str]:
    out: dict[str, str] = {}
    offset = 0
    while True:
        page = client.get("/v1/jobs", params={"workload": label, "limit": 1000, "offset": offset})
        page.raise_for_status()
        body = page.json()
        out.update({item["id"]: item["status"] for item in body["items"]})
        offset += len(body["items"])
        if not body["items"] or offset >= body["total"]:
            return out


def _cancel_unfinished(client: httpx.Client, label: str, wait_s: float = 60.0) -> None:
    """Cancel what is still queued or running, then wait (a running job stops at its next window boundary)
    so the records show every job in a final state."""
    for job_id, job_status in _statuses(client, label).items():
        if job_status not in FINAL_STATUSES:
            try:
                client.delete(f"/v1/jobs/{job_id}")  # 409 if it ended meanwhile: fine
            except httpx.HTTPError:
                pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if all(s in FINAL_STATUSES for s in _statuses(client, label).values()):
            return
        time.sleep(0.5)


def _await_deferred_predictions(client: httpx.Client, ids: dict[int, str], details: dict[int, dict],
                                wait_s: float = 15.0) -> None:
    """Re-read, for up to `wait_s`, the jobs that ended before their admission prediction was stored. A job
    admitted while a slot was free, or under an order that does not read predictions (FCFS), is predicted after it
    is queued (`elis.api.deferred`), and a short one can end first; its record should still carry the prediction.
    Only where the service predicts (some job of the run has a prediction)."""
    if not any(d.get("initial_prediction") is not None for d in details.values()):
        return
    deadline = time.monotonic() + wait_s
    missing = [i for i, d in details.items() if d.get("initial_prediction") is None and d.get("status") == "done"]
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        for index in list(missing):
            details[index] = job_detail(client, ids[index])
            if details[index].get("initial_prediction") is not None:
                missing.remove(index)
    if missing:
        log.warning("%d finished jobs still have no admission prediction after %.0f s", len(missing), wait_s)


def run_live(base_url: str, items: Sequence[WorkItem], label: str, timeout_s: float = 3600.0,
             progress: bool = True, desc: str | None = None) -> RunResult:
    """Submit `items` to the API at `base_url` under the workload label `label` and wait until all ended.

    A refused job, a time-out or Ctrl-C end the run early: unfinished jobs are cancelled and the result says
    why (`error`, `interrupted`) next to the records of every submitted job."""
    result = RunResult()
    start = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=30.0, headers=auth_headers(), limits=CLIENT_LIMITS) as client:  # ELIS_API_KEY
        submitter = _Submitter(client, items, label)
        failure: Exception | None = None
        submitter.start()
        bar = tqdm(total=len(items), desc=desc or label, unit="job", disable=not progress, dynamic_ncols=True)
        try:
            while True:
                statuses = _statuses(client, label)
                done = sum(1 for s in statuses.values() if s in FINAL_STATUSES)
                running = sum(1 for s in statuses.values() if s == "running")
                bar.set_postfix(submitted=max(submitter.submitted, len(statuses)), running=running, done=done,
                                refresh=False)
                bar.update(done - bar.n)
                if submitter.error is not None:
                    failure = submitter.error
                    break
                if done >= len(items):
                    break
                if time.monotonic() - start > timeout_s:
                    failure = ReplayError(f"{len(items) - done} of {len(items)} jobs unfinished after {timeout_s:.0f} s")
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            result.interrupted = True
        except httpx.HTTPError as exc:
            failure = ReplayError(f"lost the API at {base_url}: {exc}")
        finally:
            bar.close()
            submitter.stop.set()
            submitter.join()
        ids = dict(submitter.ids)
        result.submitted = len(ids)
        result.orderings = dict(submitter.orderings)
        details: dict[int, dict] = {}
        try:
            if result.interrupted or failure is not None:
                _cancel_unfinished(client, label)
            for index, job_id in sorted(ids.items()):
                details[index] = job_detail(client, job_id)
            _await_deferred_predictions(client, ids, details)
        except httpx.HTTPError as exc:  # keep what was read; the report says the run failed
            failure = failure or ReplayError(f"lost the API at {base_url}: {exc}")
        result.records.extend(live_record(detail, index) for index, detail in sorted(details.items()))
    result.wall_s = time.monotonic() - start
    result.error = None if failure is None else str(failure)
    return result
