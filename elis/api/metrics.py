"""The API's Prometheus metrics, read from the database at each scrape: jobs by status, queue depth per
priority level, JCT and queuing-delay histograms by policy, and the predictor's live rank quality.

Reading the database (rather than counting in-process) gives the same numbers from every API replica and
from every uvicorn worker process, so no multiprocess mode is needed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from numbers import Real

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from elis.storage.db import session_scope
from elis.storage.models import Job, JobStatus

JCT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DELAY_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

log = logging.getLogger(__name__)


def histogram_rows(session, column, buckets: tuple[float, ...]) -> list[tuple]:
    """Per policy over done jobs: (policy, count, sum, cumulative count per bucket)."""
    query = (
        select(
            Job.policy,
            func.count(),
            func.coalesce(func.sum(column), 0.0),
            *[func.sum(case((column <= edge, 1), else_=0)) for edge in buckets],
        )
        .where(Job.status == JobStatus.DONE.value, column.is_not(None))
        .group_by(Job.policy)
    )
    return [tuple(row) for row in session.execute(query)]


def _histogram(name: str, documentation: str, rows: list[tuple], buckets: tuple[float, ...]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["policy"])
    for policy, count, total, *cumulative in rows:
        points = [(str(edge), int(n or 0)) for edge, n in zip(buckets, cumulative)] + [("+Inf", int(count))]
        family.add_metric([policy], points, sum_value=float(total))
    return family


def rank_quality_values(snapshot, prefix: str = "") -> dict[str, float]:
    """The numbers of the scheduler's guard snapshot (a mapping, possibly nested, a dataclass or one number),
    named by their path (`guard_judged_tau`, `rank_quality_kendall_tau`, ...); booleans as 0/1."""
    if isinstance(snapshot, Real):
        return {prefix or "value": float(snapshot)}
    if dataclasses.is_dataclass(snapshot):
        snapshot = dataclasses.asdict(snapshot)
    elif not isinstance(snapshot, dict):
        snapshot = getattr(snapshot, "__dict__", {})
    values: dict[str, float] = {}
    for key, value in snapshot.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, (Real, dict)) or dataclasses.is_dataclass(value):
            values.update(rank_quality_values(value, name))
    return values


class ApiCollector(Collector):
    """Collects at scrape time from the database and the app's state."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        state = self.app.state
        up = GaugeMetricFamily("elis_metrics_database_up", "1 when the database answered this scrape")
        try:
            yield from self._from_database(state.settings.resolved_database_url)
            up.add_metric([], 1)
        except Exception as exc:  # a scrape must answer even when the database is away
            log.error("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0)
        yield up
        failures = CounterMetricFamily("elis_predictor_admission_failures", "Initial predictions that failed")
        failures.add_metric([], state.predictor.failures)
        yield failures
        yield from self._rank_quality(state)

    def _from_database(self, url: str) -> Iterator[Metric]:
        with session_scope(url) as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            depth = session.execute(
                select(Job.priority, func.count())
                .where(Job.status == JobStatus.QUEUED.value)
                .group_by(Job.priority)
            ).all()
            jct = histogram_rows(session, Job.jct_s, JCT_BUCKETS)
            delay = histogram_rows(session, Job.queuing_delay_s, DELAY_BUCKETS)
        jobs = GaugeMetricFamily("elis_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        queue = GaugeMetricFamily(
            "elis_queue_depth",
            "Queued jobs per broker priority level (higher runs sooner; 'none': not yet published)",
            labels=["level"],
        )
        for level, count in depth:
            queue.add_metric(["none" if level is None else str(level)], count)
        yield queue
        yield _histogram(
            "elis_job_completion_seconds", "Job completion time (JCT) of done jobs", jct, JCT_BUCKETS
        )
        yield _histogram(
            "elis_job_queuing_delay_seconds", "Total queuing delay of done jobs", delay, DELAY_BUCKETS
        )

    def _rank_quality(self, state) -> Iterator[Metric]:
        # The scheduler's rank-quality guard (elis.scheduling.guard), where the service has one.
        scheduler = getattr(state, "scheduler", None)
        snapshot_of = getattr(scheduler, "guard_snapshot", None) or getattr(scheduler, "snapshot", None)
        if snapshot_of is None:
            return
        gauge = GaugeMetricFamily(
            "elis_predictor_rank_quality", "The predictor's live rank quality (guard)", labels=["measure"]
        )
        try:
            for measure, value in rank_quality_values(snapshot_of()).items():
                gauge.add_metric([measure], value)
        except Exception as exc:
            log.error("metrics: the rank-quality guard did not answer: %s", exc)
        yield gauge


def install_metrics(app: FastAPI) -> None:
    """Serve `GET /metrics` (Prometheus text format) from a registry of this app's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApiCollector(app))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(await run_in_threadpool(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)
