"""`elis compare`: one workload under several policies, back to back on the live stack, then the exact-length
bound (the true output lengths of the FCFS run, forced, under SRTF-oracle), in one table.

Every policy gets the same items: the same prompts, arrival offsets and sampling settings. One worker serves
every run (the worker schedules each job by the policy stored with it); each policy gets its own API process,
as `elis demo` does, because the API's policy is fixed when it starts.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from elis.replay.client import auth_headers
from elis.replay.live import LiveRecord, RunResult, WorkItem, read_live_records, run_live, write_live_records
from elis.replay.report import markdown_table, print_table, summarize
from elis.simulator.engine_profile import EngineProfile

log = logging.getLogger(__name__)

BOUND = "bound"
BOUND_POLICY = "srtf-oracle"

# (key, column title, format); every metric is also shown as a ratio to FCFS and to the bound.
METRICS = (
    ("mean_jct", "mean JCT s", "{:.2f}"),
    ("p50_jct", "p50 JCT s", "{:.2f}"),
    ("p90_jct", "p90 JCT s", "{:.2f}"),
    ("p99_jct", "p99 JCT s", "{:.2f}"),
    ("mean_queuing_delay", "mean queuing s", "{:.2f}"),
    ("max_queuing_delay", "max queuing s", "{:.2f}"),
    # Before the queue: tokenizing and the length prediction (the JCT includes it; docs/compare.md).
    ("mean_admission", "mean admission s", "{:.2f}"),
    ("throughput_rps", "jobs/s", "{:.3f}"),
    ("throughput_tps", "tokens/s", "{:.1f}"),
    # At temperature > 0 the same prompts and seeds can give other outputs under another batch composition:
    # a run that generated more tokens is slower for that reason, not for its order.
    ("mean_output_tokens", "mean output tokens", "{:.0f}"),
    # The engine's own speed in this run: window compute per generated token of one sequence. On a shared
    # machine it drifts by a fifth within minutes, under one order as under another (docs/scheduling.md,
    # run 11): a run whose JCT ratio moves with this column measured the machine, not the policy.
    ("engine_ms_per_token", "engine ms/token", "{:.1f}"),
    # Mean JCT divided by that: JCT counted in the time the engine took per token in this run. Its ratio to
    # FCFS cancels the machine's drift between runs (exactly when jobs barely queue; under load queueing
    # amplifies a slower engine more than in proportion, so only in part). It would also cancel a speed
    # change that the order itself caused (a batch of other size), which was small here: 26-30 ms/token from
    # 1 to 4 sequences at once.
    ("mean_jct_token_times", "mean JCT in token-times", "{:.0f}"),
)


class CompareError(RuntimeError):
    """The comparison cannot run (bad options, a stack that does not start); the message says why."""


def metrics_of(records: Sequence[LiveRecord]) -> dict[str, float]:
    """The table's metrics over the finished jobs of one run (JCT percentiles, queuing delay, throughput)."""
    plain = [r.record for r in records]
    summary = summarize(plain)
    done = [r for r in plain if r.status == "done"]
    values = {key: getattr(summary, key) for key, _, _ in METRICS if hasattr(summary, key)}
    values["max_queuing_delay"] = max((r.queuing_delay for r in done), default=math.nan)
    values["mean_output_tokens"] = (
        sum(r.num_output_tokens for r in done) / len(done) if done else math.nan
    )
    values["engine_ms_per_token"] = speed = engine_ms_per_token(records)
    values["mean_jct_token_times"] = 1e3 * values["mean_jct"] / speed if speed > 0 else math.nan
    values["jobs"] = float(summary.num_jobs)
    values["submitted"] = float(len(plain))
    return values


def engine_ms_per_token(records: Sequence[LiveRecord]) -> float:
    """Milliseconds of window compute per token generated, over the finished jobs' windows whose compute time
    was recorded (NaN for records written before it was)."""
    compute_s = tokens = 0.0
    for live in records:
        if live.record.status != "done" or len(live.window_compute_s) != len(live.window_tokens):
            continue
        for seconds, count in zip(live.window_compute_s, live.window_tokens, strict=True):
            if math.isfinite(seconds) and seconds > 0:  # 0: not measured
                compute_s += seconds
                tokens += count
    return 1e3 * compute_s / tokens if tokens else math.nan


def _ratio(value: float, base: float | None) -> float:
    if base is None or math.isnan(base) or base == 0 or math.isnan(value):
        return math.nan
    return value / base


def _fmt_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


# Round r > 1 of `--rounds` names its runs `<policy>.r<r>`; round 1 keeps the plain policy name.
ROUND_SEP = ".r"


def run_name(policy: str, round_no: int) -> str:
    """The name of `policy`'s run in round `round_no` (1-based)."""
    return policy if round_no == 1 else f"{policy}{ROUND_SEP}{round_no}"


def policy_of_run(name: str) -> str:
    """`isrtf.r2` -> `isrtf`; a plain name is its own policy."""
    head, sep, tail = name.rpartition(ROUND_SEP)
    return head if sep and tail.isdigit() else name


def round_order(policies: Sequence[str], round_no: int) -> list[str]:
    """Round `round_no`'s order: the list rotated by one per round, so no policy always runs first (on a colder
    engine) or last (on a busier database)."""
    shift = (round_no - 1) % len(policies) if policies else 0
    return list(policies[shift:]) + list(policies[:shift])


def _pooled_name(policy: str, rounds: int) -> str:
    return f"{policy} (mean of {rounds})"


def pooled_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[int, dict[str, float]]]:
    """For every policy that ran in more than one round: (its number of rounds, each metric averaged over them).
    Each round holds the same jobs, so the average of the rounds' means is the mean over all of them."""
    groups: dict[str, list[Mapping[str, float]]] = {}
    for name, values in metrics.items():
        groups.setdefault(policy_of_run(name), []).append(values)
    return {policy: (len(members), {key: sum(m[key] for m in members) / len(members) for key in members[0]})
            for policy, members in groups.items() if len(members) > 1}


def round_spread(runs: Mapping[str, Sequence[LiveRecord]], key: str = "mean_jct") -> dict[str, tuple[float, float]]:
    """Per policy that ran in more than one round: the (lowest, highest) value of `key` over its rounds. For
    FCFS that is an A/A test: how far two runs of one order differ, the noise a ratio must clear."""
    values: dict[str, list[float]] = {}
    for name, records in runs.items():
        values.setdefault(policy_of_run(name), []).append(metrics_of(records)[key])
    return {policy: (min(v), max(v)) for policy, v in values.items() if len(v) > 1}


def comparison_table(runs: Mapping[str, Sequence[LiveRecord]]) -> tuple[list[str], list[list[str]], list[str], list[list]]:
    """The table both ways: formatted (`value (÷FCFS/÷bound)` per cell) and raw for the CSV. With several rounds
    (`fcfs`, `fcfs.r2`, ...) each policy also gets a `(mean of N)` row, and the ratios are to FCFS's."""
    metrics = {name: metrics_of(records) for name, records in runs.items() if name != BOUND}
    pooled = pooled_metrics(metrics)
    metrics.update({_pooled_name(policy, rounds): values for policy, (rounds, values) in pooled.items()})
    if BOUND in runs:
        metrics[BOUND] = metrics_of(runs[BOUND])
    fcfs = pooled["fcfs"][1] if "fcfs" in pooled else metrics.get("fcfs")
    bound = metrics.get(BOUND)
    header = ["run", "jobs"] + [title for _, title, _ in METRICS]
    csv_header = ["run", "jobs", "submitted"]
    for key, _, _ in METRICS:
        csv_header += [key, f"{key}_vs_fcfs", f"{key}_vs_bound"]
    rows, csv_rows = [], []
    for name, values in metrics.items():
        row = [name, f"{int(values['jobs'])}/{int(values['submitted'])}"]
        csv_row: list = [name, int(values["jobs"]), int(values["submitted"])]
        for key, _, fmt in METRICS:
            value = values[key]
            vs_fcfs = _ratio(value, fcfs[key] if fcfs else None)
            vs_bound = _ratio(value, bound[key] if bound else None)
            text = "-" if math.isnan(value) else fmt.format(value)
            row.append(f"{text} ({_fmt_ratio(vs_fcfs)}/{_fmt_ratio(vs_bound)})")
            csv_row += [value, vs_fcfs, vs_bound]
        rows.append(row)
        csv_rows.append(csv_row)
    return header, rows, csv_header, csv_rows


TABLE_NOTE = ("Each cell: value (ratio to FCFS/ratio to the bound). jobs: done/submitted. engine ms/token: window "
              "compute per generated token, the machine's speed in that run; mean JCT in token-times: mean JCT "
              "divided by it, whose ratio cancels the speed drift between runs (fully when jobs barely queue).")


def table_note(runs: Mapping[str, Sequence[LiveRecord]]) -> str:
    """The note under the table; with several rounds, also how far each policy's rounds differ (the noise)."""
    spreads = round_spread(runs)
    if not spreads:
        return TABLE_NOTE
    parts = [f"{policy} {low:.2f}-{high:.2f} s ({(high / low - 1) * 100 if low > 0 else math.nan:.0f}%)"
             for policy, (low, high) in spreads.items()]
    return (TABLE_NOTE + " Ratios are to FCFS's mean over its rounds. Mean JCT between rounds (the noise): "
            + "; ".join(parts) + ".")


def speed_matched_pairs(metrics: Mapping[str, Mapping[str, float]]) -> list[tuple[str, str, dict[str, float]]]:
    """Each run that is not FCFS, set against the FCFS run (of any round) whose engine ran closest to its speed:
    (run, that FCFS run, {"speed_gap": relative difference of their ms/token, and the ratio of each of mean_jct,
    p99_jct, mean_jct_token_times}). On a machine whose speed drifts between runs, this pairing is the reading
    least flattered by a run that happened to get a fast engine (docs/scheduling.md, run 13). Runs whose speed
    was not recorded are left out."""
    fcfs_runs = {name: values for name, values in metrics.items()
                 if policy_of_run(name) == "fcfs" and math.isfinite(values.get("engine_ms_per_token", math.nan))}
    pairs = []
    for name, values in metrics.items():
        speed = values.get("engine_ms_per_token", math.nan)
        if policy_of_run(name) == "fcfs" or not fcfs_runs or not math.isfinite(speed):
            continue
        partner = min(fcfs_runs, key=lambda other: abs(fcfs_runs[other]["engine_ms_per_token"] - speed))
        base = fcfs_runs[partner]
        ratios = {key: _ratio(values[key], base[key]) for key in ("mean_jct", "p99_jct", "mean_jct_token_times")}
        ratios["speed_gap"] = abs(speed / base["engine_ms_per_token"] - 1)
        pairs.append((name, partner, ratios))
    return pairs


def speed_matched_note(runs: Mapping[str, Sequence[LiveRecord]]) -> str:
    """One sentence for under the table: every run against the FCFS run on the closest engine speed ('' when
    there is nothing to pair: no FCFS run, or only one run)."""
    metrics = {name: metrics_of(records) for name, records in runs.items()}
    pairs = speed_matched_pairs(metrics)
    if not pairs:
        return ""
    parts = [f"{name} vs {partner} (speeds {ratios['speed_gap'] * 100:.0f}% apart): mean "
             f"{_fmt_ratio(ratios['mean_jct'])}x, p99 {_fmt_ratio(ratios['p99_jct'])}x, token-times "
             f"{_fmt_ratio(ratios['mean_jct_token_times'])}x" for name, partner, ratios in pairs]
    return "Against the FCFS run on the closest engine speed: " + "; ".join(parts) + "."


def work_note(runs: Mapping[str, Sequence[LiveRecord]], tolerance: float = 0.03) -> str:
    """A warning when runs generated different amounts of work: natural (not forced) outputs vary with batch
    composition, so one policy's run may produce 5-10% fewer tokens than FCFS's, and part of its JCT ratio is then
    work, not order (docs/compare.md, the 2026-12-05 sweep). '' when every run's mean output tokens is within
    `tolerance` of FCFS's mean over its rounds, or there is no FCFS run."""
    per_run = {name: metrics_of(records)["mean_output_tokens"] for name, records in runs.items()}
    fcfs = [tokens for name, tokens in per_run.items() if policy_of_run(name) == "fcfs" and math.isfinite(tokens)]
    if not fcfs or sum(fcfs) <= 0:
        return ""
    base = sum(fcfs) / len(fcfs)
    off = [f"{name} {100 * (tokens / base - 1):+.0f}%" for name, tokens in per_run.items()
           if policy_of_run(name) != "fcfs" and math.isfinite(tokens) and abs(tokens / base - 1) > tolerance]
    if not off:
        return ""
    return ("the runs did different work: mean output tokens against FCFS's " + ", ".join(off)
            + "; part of those runs' JCT ratios is work, not order (--lengths-from forces the same lengths)")


def ordering_notes(manifest_runs: Mapping[str, Mapping]) -> list[str]:
    """One line per run whose jobs were not all admitted under its own policy's order (from the manifest's
    `orderings`): e.g. SSJF held at FCFS by the quality guard, which then compared nothing."""
    notes = []
    for name, run in manifest_runs.items():
        orderings = run.get("orderings") or {}
        total = sum(orderings.values())
        other = {order: n for order, n in orderings.items() if order != run.get("policy")}
        if other:
            parts = ", ".join(f"{n} of {total} in order '{order}'" for order, n in other.items())
            notes.append(f"{name} ran {parts}: not its own policy's order (the quality guard's fallback: "
                         "it judges only natural finished jobs; see /v1/stats)")
        guard_at_start = run.get("guard_at_start") or {}
        own_order = not orderings or run.get("policy") in orderings  # else no job got an order from predictions
        if _preempts_on_predictions(run.get("policy")) and guard_at_start.get("preempting") is False and own_order:
            notes.append(f"{name} started with pre-emption on predictions off ({guard_at_start.get('preempt_reason')}):"
                         " it ordered the queue by predictions but yielded only to starving jobs")
    return notes


def all_forced(items: Sequence[WorkItem]) -> bool:
    """Whether every job of a workload has its output length forced (a length trace, `--lengths-from`)."""
    return bool(items) and all("target_output_tokens" in item.body for item in items)


def _uses_predictions(policy: str | None) -> bool:
    """Whether `policy` orders by length predictions (so the quality guard can hold it in FCFS order)."""
    from elis.scheduling.policy import UnknownPolicyError, make_policy

    try:
        return make_policy(policy or "").uses_predictions
    except UnknownPolicyError:
        return False


def _preempts_on_predictions(policy: str | None) -> bool:
    """Whether running jobs of `policy` yield to a head predicted sooner (the guard's pre-emption gate applies)."""
    from elis.scheduling.policy import JobView, make_policy

    return _uses_predictions(policy) and make_policy(policy or "").yields(JobView(job_id="", arrival_time=0.0))


def write_tables(out_dir: Path, runs: Mapping[str, Sequence[LiveRecord]], title: str = "",
                 notes: Sequence[str] = (), readings: Sequence[str] = ()) -> str:
    """table.md and table.csv in `out_dir`; returns the Markdown. `notes`: warnings to add under the table;
    `readings`: other lines to add there (e.g. `same_work_note`)."""
    header, rows, csv_header, csv_rows = comparison_table(runs)
    warnings = [line for line in [work_note(runs), *notes] if line]
    note = " ".join(part for part in [table_note(runs), speed_matched_note(runs), *readings,
                                      *(f"Warning: {line}." for line in warnings)] if part)
    text = (f"## {title}\n\n" if title else "") + markdown_table(header, rows) + f"\n\n{note}\n"
    (out_dir / "table.md").write_text(text)
    with open(out_dir / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_header)
        writer.writerows(csv_rows)
    return text


def print_comparison(runs: Mapping[str, Sequence[LiveRecord]], title: str | None = None) -> None:
    header, rows, _, _ = comparison_table(runs)
    print_table(header, rows, title=title)
    print(table_note(runs))
    if paired := speed_matched_note(runs):
        print(paired)


def records_path(out_dir: Path, run: str) -> Path:
    return out_dir / f"records-{run}.csv"


def bound_items(items: Sequence[WorkItem], true_lengths: Mapping[int, int]) -> list[WorkItem]:
    """The same items with each output forced to its recorded true length (items without one are left out).

    Each keeps its max_tokens (raised to the length if a recording ran longer): the API then caps the job's
    predictions at max_tokens as for the natural job. Without it the cap would be the known length, and
    `min(prediction, cap)` would hand SSJF and ISRTF the true length of every job predicted too long (the
    forced runs before 2026-12-02 had that leak)."""
    out = []
    for item in items:
        if item.index not in true_lengths:
            continue
        length = max(1, int(true_lengths[item.index]))
        body = {**item.body, "target_output_tokens": length}
        if "max_tokens" in body:
            body["max_tokens"] = max(int(body["max_tokens"]), length)
        out.append(replace(item, body=body))
    return out


def true_lengths_of(records: Sequence[LiveRecord]) -> dict[int, int]:
    """Item -> output tokens of the jobs that finished (what the bound forces)."""
    return {r.item: r.record.num_output_tokens for r in records if r.record.status == "done"}


# -- the run manifest -------------------------------------------------------------------------------------


def _git_commit() -> dict[str, object]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _predictor_info(settings) -> dict[str, object]:
    try:
        from elis.predictor.checkpoint import file_sha256
        from elis.predictor.serving import default_checkpoint_path

        path = default_checkpoint_path()
    except Exception as exc:  # noqa: BLE001  (no checkpoint: the manifest says so)
        return {"checkpoint": None, "error": str(exc)}
    info: dict[str, object] = {"checkpoint": str(path), "sha256": file_sha256(path)}
    try:
        from elis.predictor.checkpoint import load_checkpoint

        meta = load_checkpoint(path).metadata
        info.update({k: meta.get(k) for k in ("format", "encoder", "window_tokens", "dataset_sha256", "version")
                     if k in meta})
    except Exception as exc:  # noqa: BLE001
        info["metadata_error"] = str(exc)
    return info


def _safe_url(url: str) -> str:
    """A database/broker URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"


def build_manifest(settings, options: Mapping[str, object], stack: Mapping[str, object]) -> dict[str, object]:
    """Everything needed to read a run later: code, settings, model, predictor, machine, options."""
    from elis.models_prepare import resolve_model

    dumped = settings.model_dump(mode="json")
    for key in ("database_url", "broker_url"):
        dumped[key] = _safe_url(dumped.get(key) or "")
    return {
        "kind": "elis compare",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": _git_commit(),
        "options": dict(options),
        "stack": dict(stack),
        "settings": dumped,
        "model": resolve_model(settings.model, settings.models_dir),
        "predictor": _predictor_info(settings),
        "machine": {
            "cpu_count": os.cpu_count(),
            **_cpu_model(),
            "ram_bytes": _ram_bytes(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "hostname": platform.node(),
        },
        "runs": {},
        "status": "running",
    }


# CPU features that decide vLLM-CPU's speed: without native bfloat16 (AVX512-BF16 or AMX) the same model ran
# about 8x slower on a machine of the same kind (docs/benchmarks.md), so a run's numbers need them beside it.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """The CPU's model name and which of SPEED_FLAGS it has (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # every core repeats the same lines: keep the first
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", ""), "cpu_flags": [f for f in SPEED_FLAGS if f in flags]}


def write_manifest(out_dir: Path, manifest: Mapping[str, object]) -> None:
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")


# -- the stack -------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The processes a comparison uses: a worker (started here unless one is running) and one API per policy."""

    settings: object
    out_dir: Path
    database_url: str
    base_urls: dict[str, str] = field(default_factory=dict)  # policy -> running API given by the user
    slots: int = 4
    queue: str = ""
    env: dict[str, str] = field(default_factory=dict)
    worker: object = None
    apis: list = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        return {"database_url": _safe_url(self.database_url), "queue": self.queue, "slots": self.slots,
                "started_worker": self.worker is not None, "given_apis": dict(self.base_urls)}

    def start(self, echo: Callable[[str], None]) -> None:
        """Start a worker on a fresh queue, unless the user gave running APIs (then their worker serves)."""
        from elis import launch
        from elis.storage.migrate import ensure_database, upgrade

        settings = self.settings
        self.queue = settings.queue_name
        try:
            if ensure_database(self.database_url):
                echo(f"created the database {_safe_url(self.database_url)}")
            upgrade(self.database_url)
        except Exception as exc:
            raise CompareError(f"cannot create or migrate the database {_safe_url(self.database_url)}: {exc}") from exc
        if self.base_urls:
            self.env = launch.elis_env(database_url=self.database_url)
            return
        from elis.models_prepare import prepare_default_model

        echo(f"preparing the model in {settings.models_dir}")
        prepare_default_model(settings.models_dir)
        self.queue = f"elis.compare.{os.getpid()}"
        try:
            launch.purge_queue(settings.broker_url, self.queue, settings.num_priority_levels)
        except Exception as exc:
            raise CompareError(f"RabbitMQ is not reachable at {_safe_url(settings.broker_url)} ({exc}); start it "
                               "first (scripts/services.sh)") from exc
        self.env = launch.elis_env(database_url=self.database_url, queue_name=self.queue, slots=self.slots)
        echo(f"starting a worker ({self.slots} slots, vLLM {settings.dtype}); logs in {self.out_dir}")
        self.worker = launch.start_worker(self.env, self.out_dir, node=f"compare-{os.getpid()}")
        try:
            launch.wait_for_worker(self.worker)
        except launch.LaunchError as exc:
            raise CompareError(str(exc)) from exc

    def api(self, policy: str) -> str:
        """The base URL of an API serving `policy` (started now unless the user gave one)."""
        from elis import launch

        if policy in self.base_urls:
            return self.base_urls[policy]
        port = launch.free_port()
        managed = launch.start_api({**self.env, "ELIS_POLICY": policy}, port, self.out_dir, name=f"api-{policy}")
        self.apis.append(managed)
        base = f"http://127.0.0.1:{port}"
        try:
            launch.wait_for_api(managed, base)
        except launch.LaunchError as exc:
            raise CompareError(str(exc)) from exc
        return base

    def stop_apis(self) -> None:
        while self.apis:
            self.apis.pop().stop()

    def close(self) -> None:
        self.stop_apis()
        if self.worker is not None:
            self.worker.stop()
            _delete_queue(self.settings.broker_url, self.queue)


def _delete_queue(broker_url: str, name: str) -> None:
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=5) as connection:
            connection.default_channel.queue_delete(name)
    except Exception:  # noqa: BLE001, S110  (a leftover empty queue is harmless)
        pass


def policies_of(base_urls: Sequence[str]) -> dict[str, str]:
    """policy -> URL of each running API (its policy as /healthz reports it)."""
    import httpx

    out = {}
    for url in base_urls:
        url = url.rstrip("/")
        try:
            health = httpx.get(f"{url}/healthz", timeout=10)
            policy = health.json()["policy"].split("+")[0]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise CompareError(f"no elis API answers at {url} ({exc})") from exc
        out[policy] = url
    return out


def guard_state(base_url: str, wait_s: float = 5.0) -> dict:
    """The quality guard's state on a started API (GET /v1/stats): the order in force, whether predictions may
    pre-empt, and why, and the prefill weight in force with its source (the workers measure it at start-up);
    {} when the API does not say. Waits up to `wait_s` for its first refresh, so the
    state is the one judged from the finished jobs in the database, not the start state."""
    import httpx

    deadline = time.monotonic() + wait_s
    while True:
        try:
            stats = httpx.get(f"{base_url.rstrip('/')}/v1/stats", timeout=10, headers=auth_headers()).json()
        except (httpx.HTTPError, ValueError):
            return {}
        guard = stats.get("guard") or {}
        if stats.get("rank_quality") is not None or time.monotonic() >= deadline:
            return {"ordering": stats.get("ordering"), "fallback": guard.get("fallback"),
                    "judged_tau": guard.get("judged_tau"), "reason": guard.get("reason"),
                    "preempting": guard.get("preempting"), "preempt_reason": guard.get("preempt_reason"),
                    "prefill_weight": stats.get("prefill_weight"),
                    "prefill_weight_source": stats.get("prefill_weight_source")}
        time.sleep(0.5)


def outcome_state(base_url: str) -> dict:
    """The outcome guard's state on a running API (GET /v1/stats `outcome`): tripped or not, why, and the last
    check (the policy's jobs' mean JCT against their FCFS counterfactual); {} when the API does not say."""
    import httpx

    try:
        stats = httpx.get(f"{base_url.rstrip('/')}/v1/stats", timeout=10, headers=auth_headers()).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return stats.get("outcome") or {}


def measured_capacity_profile(database_url: str) -> EngineProfile | None:
    """The bundled engine profile at the speed a worker last measured at start-up on this database (the
    compare's own worker measures before it takes work), so that `--load` means a fraction of what this machine
    serves (the bundled profile says 29 ms a decode step at 4 slots; engines of this kind of machine measured
    76-131 ms, where "load 0.8" meant an overload); None when no worker measured one or the database does not
    answer."""
    from elis.storage.db import session_scope
    from elis.storage.profiles import last_measured_profile

    try:
        with session_scope(database_url) as session:
            row = last_measured_profile(session)
            if row is None:
                return None
            bundled = EngineProfile.load()
            prefill_s = row.prefill_s_per_token if row.prefill_s_per_token > 0 else bundled.prefill_s_per_token
            return bundled.at_measured_speed(
                slots=row.slots, decode_step_s=row.decode_step_s, prefill_s_per_token=prefill_s,
                source=f"measured by worker {row.worker} at {row.measured_at:%Y-%m-%d %H:%M} "
                       f"({1e3 * row.decode_step_s:.0f} ms a decode step at {row.slots} slots, "
                       f"{1e3 * prefill_s:.2f} ms a prefill token)")
    except Exception as exc:  # the bundled profile serves when the database cannot say; the user is told why
        log.warning("no measured engine speed for --load (%s: %s); the bundled engine profile estimates it",
                    type(exc).__name__, exc)
        return None


def same_work_reading(database_url: str, label: str) -> dict:
    """The outcome guard's reading of one run, every job judged (`elis.scheduling.outcome`): the run's mean JCT
    against the FCFS counterfactual of the same jobs, replayed in arrival order on the same slots with their own
    slot times. The engine's speed cancels, so this tells what the order did where runs of one workload an hour
    apart differ by more than the orders do (about 1.00 on an FCFS run: the counterfactual's own error).
    {} when the database cannot be read or the run has no finished job."""
    from elis import clock
    from elis.scheduling.outcome import measure_outcome
    from elis.storage import jobs as store
    from elis.storage.db import session_scope

    try:
        with session_scope(database_url) as session:
            now = clock.now()
            cohort = store.recent_cohort(session, limit=100_000, arrived_before=now, now=now, workload=label)
    except Exception:  # a reading for the report, never a reason to lose the run
        return {}
    check = measure_outcome([replace(job, judged=True) for job in cohort.jobs], cohort.slots, cohort.backlog)
    if check is None:
        return {}
    return {"ratio": round(check.ratio, 4), "mean_jct_s": round(check.realized_mean_s, 3),
            "fcfs_counterfactual_s": round(check.fcfs_mean_s, 3), "jobs": check.num_judged, "slots": check.slots}


def same_work_note(manifest_runs: Mapping[str, Mapping]) -> str:
    """One line under the table: each run's same-work reading (`same_work_reading`), from the manifest."""
    readings = [f"{name} {run['same_work']['ratio']:.3f}" for name, run in manifest_runs.items()
                if (run.get("same_work") or {}).get("ratio") is not None]
    if not readings:
        return ""
    return ("Same work in FCFS order (each run's mean JCT over the FCFS order of its own jobs on the same slots and "
            "slot times: the engine's speed cancels; about 1.00 on an FCFS run): " + ", ".join(readings) + ".")


# -- the comparison ---------------------------------------------------------------------------------------


def forced_order_warning(items: Sequence[WorkItem], policies: Sequence[str], guard: Mapping) -> str | None:
    """Why the length-aware policies of a comparison would run in the quality guard's fallback order (the known
    prefill first, or FCFS), said before the first run; None when they would not. The quality guard judges only
    natural finished jobs (a forced length says nothing of the predictor): when every job's length is forced and
    the database holds no natural job to judge, it keeps its fallback all along, and the comparison measures the
    fallback under their names."""
    predicted = [p for p in policies if _uses_predictions(p)]
    no_evidence = bool(guard.get("fallback")) and str(guard.get("reason") or "").startswith("no evidence")
    if not (predicted and all_forced(items) and no_evidence):
        return None
    return (f"every job's length is forced and the quality guard has no natural finished job to judge "
            f"({guard.get('reason')}): {', '.join(predicted)} will run in the guard's fallback order "
            f"({guard.get('ordering') or 'fcfs (guard fallback)'}), not by predictions. For a forced-length "
            "comparison of predicted orders, first run a natural pass of a re-predicting policy into the same "
            "--database-url (docs/compare.md), or set ELIS_GUARD_START_IN_FALLBACK=false to trust the predictor "
            "untested")


@dataclass
class CompareResult:
    """What a comparison produced: records per run (policies, then `bound`) and how it ended."""

    runs: dict[str, list[LiveRecord]] = field(default_factory=dict)
    interrupted: bool = False
    error: str | None = None


def warmup_items(items: Sequence[WorkItem]) -> list[WorkItem]:
    """Every item once, all at once, each forced to one output token: what the warm-up submits."""
    # No max_tokens: one token each counts as one against the tenant's tokens in flight, not max_tokens each.
    return [replace(item, offset_s=0.0, body={**{k: v for k, v in item.body.items() if k != "max_tokens"},
                                               "target_output_tokens": 1})
            for item in items]


def run_compare(items: Sequence[WorkItem], policies: Sequence[str], stack: Stack, out_dir: Path,
                manifest: dict, *, bound: bool = True, bound_from: Path | None = None, timeout_s: float = 3600.0,
                echo: Callable[[str], None] = print, progress: bool = True, warmup: bool = True,
                rounds: int = 1) -> CompareResult:
    """Run `items` under each policy and then the bound on a started `stack`; write each run's records as soon
    as it ends and the manifest after every run, so an interruption leaves a consistent partial report.

    `warmup`: first, every prompt once with one output token (forced, so the quality guard ignores them; not
    measured), so the engine and its prefix cache are as warm for the first policy as for the later ones.
    `rounds`: run the policies that many times, the order rotated by one each round (`round_order`); round r > 1
    names its runs `<policy>.r<r>`. The bound runs once, after the last round."""
    result = CompareResult()
    stamp = time.strftime("%m%d%H%M%S")

    def one(name: str, policy: str, run_items: Sequence[WorkItem]) -> RunResult:
        base = stack.api(policy)
        echo(f"{name}: {len(run_items)} jobs on {base} (policy {policy})")
        guard_at_start = guard_state(base)
        if guard_at_start:
            weight, source = guard_at_start.get("prefill_weight"), guard_at_start.get("prefill_weight_source")
            echo(f"{name}: ordering {guard_at_start.get('ordering')}; {guard_at_start.get('preempt_reason')}; "
                 f"prefill weight {weight} ({source})")
        outcome_at_end: dict = {}
        label = f"compare-{stamp}-{name}"
        try:
            run = run_live(base, run_items, label=label, timeout_s=timeout_s, progress=progress, desc=name)
            outcome_at_end = outcome_state(base)
        finally:
            stack.stop_apis()
        if outcome_at_end:
            echo(f"{name}: outcome guard {outcome_at_end.get('reason')}")
        same_work = same_work_reading(stack.database_url, label)
        if same_work:
            echo(f"{name}: same work in FCFS order {same_work['ratio']:.3f} (mean JCT from the store {same_work['mean_jct_s']:.2f} s, "
                 f"FCFS counterfactual {same_work['fcfs_counterfactual_s']:.2f} s)")
        result.runs[name] = run.records
        write_live_records(run.records, records_path(out_dir, name))
        manifest["runs"][name] = {"policy": policy, "jobs": len(run_items), "submitted": run.submitted,
                                  "wall_s": round(run.wall_s, 2), "interrupted": run.interrupted,
                                  "error": run.error, "records": records_path(out_dir, name).name,
                                  "orderings": run.orderings, "guard_at_start": guard_at_start,
                                  "outcome_at_end": outcome_at_end, "same_work": same_work}
        write_manifest(out_dir, manifest)
        for line in ordering_notes({name: manifest["runs"][name]}):
            echo(f"warning: {line}")
        if run.interrupted:
            result.interrupted = True
        if run.error:
            result.error = f"{name}: {run.error}"
        return run

    try:
        predicted = [p for p in policies if _uses_predictions(p)]
        if predicted and all_forced(items):  # else nothing to warn of, and no API to start for the guard's state
            try:
                warning = forced_order_warning(items, policies, guard_state(stack.api(predicted[0])))
            finally:
                stack.stop_apis()
            if warning:
                echo(f"warning: {warning}")
                manifest["warnings"] = [*manifest.get("warnings", []), warning]
        if warmup and policies:
            warm = warmup_items(items)
            echo(f"warm-up: {len(warm)} prompts, one token each (not measured)")
            try:
                run = run_live(stack.api(policies[0]), warm, label=f"compare-{stamp}-warmup", timeout_s=timeout_s,
                               progress=progress, desc="warm-up")
            finally:
                stack.stop_apis()
            manifest["warmup"] = {"jobs": len(warm), "wall_s": round(run.wall_s, 2), "error": run.error}
            if run.interrupted:
                result.interrupted = True
                return result
        for round_no in range(1, rounds + 1):
            for policy in round_order(policies, round_no):
                one(run_name(policy, round_no), policy, items)
                if result.interrupted or result.error:
                    return result
        if bound:
            if bound_from is not None:
                lengths = true_lengths_of(read_live_records(bound_from))
            elif "fcfs" in result.runs:
                lengths = true_lengths_of(result.runs["fcfs"])
            else:
                lengths = true_lengths_of(next(iter(result.runs.values()), []))
            if not lengths:
                result.error = "bound: no finished job to take true lengths from"
                return result
            manifest["bound_lengths_from"] = str(bound_from) if bound_from else "fcfs run"
            one(BOUND, BOUND_POLICY, bound_items(items, lengths))
    except KeyboardInterrupt:
        result.interrupted = True
    except CompareError as exc:
        result.error = str(exc)
    return result
