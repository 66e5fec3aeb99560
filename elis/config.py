"""One Settings object, read from the environment (``ELIS_*``) once, on first use."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "elis"
# CPU flags of a native bfloat16 matmul (x86 AVX-512 BF16 or AMX, ARM BF16). Without one, torch emulates
# bfloat16: measured on an AVX2-only AMD EPYC, a bf16 matmul ran at 0.9 GFLOPS against 144 in float32, and vLLM
# served 6x slower (195 ms per token and job at batch 4, against 25-39 on the earlier AVX-512 machines).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def has_gpu() -> bool:
    """A CUDA device is visible (checked without importing torch)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (reads /proc/cpuinfo's flags; False when unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False


def auto_dtype() -> str:
    """bfloat16 on a GPU or a CPU with native bfloat16; float32 elsewhere (emulated bfloat16 is far slower)."""
    return "bfloat16" if has_gpu() or cpu_has_native_bf16() else "float32"


class Settings(BaseSettings):
    """Every knob of the service. Each field can be set as ``ELIS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ELIS_", env_file=".env", extra="ignore")

    # Where prepared models, checkpoints and the embedded SQLite database live.
    cache_dir: Path = DEFAULT_CACHE_DIR
    # A Hugging Face model folder or id; empty means the bundled SmolLM2-135M-Instruct,
    # prepared by `elis models prepare`.
    model: str = ""
    # vLLM's dtype: "auto" is bfloat16 on a GPU or a CPU with native bfloat16 (AVX-512 BF16, AMX), else float32.
    dtype: str = "auto"
    max_model_len: int = 2048
    # vLLM on the CPU: KV cache size in GiB (unset in vLLM means half of RAM).
    kv_cache_gib: int = 2
    engine_seed: int = 0
    # vLLM KV block size: 32 keeps the prefix cache useful across 50-token windows on the CPU (vLLM's CPU
    # default of 128 re-prefilled every window and cost a third of the throughput; docs/benchmarks.md).
    block_size: int = 32
    # "vllm" runs the model; "trace" forces each job's known output length (trace replay).
    engine: str = "vllm"

    database_url: str = ""  # empty: a SQLite file in cache_dir (the embedded default)
    # The PostgreSQL server on which `elis demo` and `elis compare` (a stack it starts) create a fresh database of
    # their own when database_url is empty; where none answers they use a SQLite file, and where it answers but
    # refuses (the database in use, no right to create) they stop and say why. Empty: always SQLite.
    local_postgres_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    queue_name: str = "elis.windows"
    num_priority_levels: int = Field(default=10, ge=2, le=255)

    @field_validator("dtype")
    @classmethod
    def _resolve_dtype(cls, value: str) -> str:
        return auto_dtype() if value.strip().lower() == "auto" else value

    policy: str = "isrtf"
    window_tokens: int = Field(default=50, ge=1)
    # Job-windows one worker runs at once (Celery threads), all batched in one engine.
    slots: int = Field(default=4, ge=1)
    # Aging (on by default): a job in the system longer than the bound (since it arrived; with
    # aging_since_arrival off, since it last entered the queue) goes first. The bound is `max_wait_s` when > 0,
    # else aging_factor x the mean service time of recently finished jobs, never below aging_floor_s nor below
    # aging_fcfs_factor x the mean JCT FCFS would have given the latest jobs.
    aging: bool = True
    max_wait_s: float = 0.0
    aging_factor: float = 3.0
    aging_floor_s: float = 10.0
    # ... and never below aging_fcfs_factor x the mean JCT FCFS would have given the last aging_fcfs_jobs jobs
    # (by arrival, done or still in the system: the outcome guard's counterfactual, from the database), so the
    # bound grows with the queue. With service times alone, on an overload every job starved within a few
    # service times and the order became FCFS (run 34). 0: off. Chosen in the simulator
    # (scripts/sim_aging_fcfs.py, docs/scheduling.md): 0.9 gives less, 1.1 costs the p99.
    aging_fcfs_factor: float = Field(default=1.0, ge=0.0)
    aging_fcfs_jobs: int = Field(default=50, ge=2)  # the latest jobs (by arrival) that FCFS mean JCT is taken over
    # Count the bound from the job's arrival (its whole time in the system) instead of from its last enqueue,
    # so a job pre-empted many times, each wait under the bound, still goes first: in the simulator it holds
    # ISRTF's p99 at 1.04x FCFS (scripts/sim_aging_tail.py, docs/scheduling.md).
    aging_since_arrival: bool = True
    # The bound grows by this x the service a job has had (seconds it held a slot): at 1 (with aging_since_arrival),
    # what starves is the time a job spent waiting, not its whole time in the system, so a long job does not starve
    # by its own running time and then keep its slot against every newcomer. 0: the whole time counts. Opt-in: the
    # simulator gave -1% to +6% on runs 46 and 52, run 54 live nothing and a 15-18% higher p99 (docs/scheduling.md).
    aging_service_factor: float = Field(default=0.0, ge=0.0)
    # Whether a starving job takes a running job's slot at its window end under a preemptive policy (ISRTF,
    # MLFQ, SRTF); off, aging only reorders the queue, as it always does under FCFS and SJF. On by default: in
    # the simulator, off re-queues 15-45% fewer jobs at the same mean JCT (within 1%) and a 1-4% higher p99
    # (scripts/sim_aging_preempt.py, docs/scheduling.md).
    aging_preempts: bool = True
    # Cost- and uncertainty-aware preemption: a running job yields only when the waiting head is sooner by
    # the switch cost (measured by the worker) plus yield_uncertainty x its own score (the predictor's
    # relative error; per step from the level file when yield_margin_per_step). Chosen in the simulator: 0.9 on
    # noise models of the predictor until 2026-12-06, 0.5 (with guard_preempt_precision 0.75) since, on eight
    # live runs replayed with their own predictions (`elis simulate replay`: 0.921x FCFS's mean on average
    # against 0.944x, worst 1.005x against 1.020x) and live in run 37 (docs/scheduling.md, "The yield margin on
    # the live predictions").
    yield_margin: bool = True
    yield_uncertainty: float = 0.5
    yield_margin_per_step: bool = False
    # A prompt's prefill is work: under a length-aware policy a job that has not run yet scores its output
    # tokens plus this x its prompt tokens (the decode steps of one job that a prompt token's prefill costs the
    # worker: prefill s/token x slots / decode step s). Unset: the median of what the live workers measured of
    # their engines at start-up (0.10-0.16 on this project's 2-core CPU at 4 slots, float32), the bundled engine
    # profile's (about 0.25) until one has; a GPU's is far smaller. 0: output alone.
    # In the simulator on the Azure 2023 lengths, exact SJF went from 0.966x to 0.878x FCFS's mean JCT at load
    # 0.8, and ISRTF under noisy predictors from 0.997-1.040x to 0.909-0.945x (docs/scheduling.md, "A prompt's
    # prefill is work").
    prefill_weight: float | None = Field(default=None, ge=0.0)
    # The live quality guard: from the last guard_window_jobs finished jobs, the Kendall tau of predictions
    # vs true lengths; below guard_threshold, length-aware order falls back to FCFS (or, opt-in, the prefill
    # order: fallback_by_prefill) until it recovers to guard_threshold + guard_hysteresis. Until guard_min_jobs
    # jobs have finished, the start state holds.
    guard: bool = True
    guard_threshold: float = 0.2
    guard_hysteresis: float = 0.05
    guard_min_jobs: int = Field(default=20, ge=2)
    guard_window_jobs: int = Field(default=200, ge=2)
    guard_start_in_fallback: bool = True
    guard_refresh_s: float = 10.0
    # Pre-emption on predictions (ISRTF yields) only while the yield rule, checked on finished jobs' predictions,
    # is right at least this often; else prediction policies order the queue but do not pre-empt. With
    # yield_uncertainty 0.5 the rule yields to a head predicted under half the running job's remaining length;
    # 75% (it was 90% with the margin 0.9, whose pairs are fewer and more extreme) let it on where it paid in the
    # replays (83% of 12,529 pairs were right in run 37, 96% at the margin 0.9).
    guard_preempt_precision: float = 0.75
    # Once on, pre-emption stays on until the precision falls below guard_preempt_precision minus this: a
    # precision at the bar moves by a point between refreshes (measured: on and off every 10 s in run 21).
    guard_preempt_hysteresis: float = Field(default=0.02, ge=0.0)
    # What guard_preempt_precision bars: "sign", the share of the yield rule's yields that are right, or "gain",
    # the share of the tokens those yields move that the right ones save (a rule right in small pairs and wrong
    # in large ones has a fair sign and a poor gain).
    guard_preempt_measure: Literal["sign", "gain"] = "sign"
    # While the quality guard holds FCFS order, ISRTF still moves a greedy job caught in a loop (it will run to
    # max_tokens, 95 times in 100: a fact of decoding, not a prediction) behind the other jobs when more than the
    # mean finished length is left (scheduling.LoopsLast). Off by default: in the simulator on greedy outputs it
    # took 4.5-8.6% off the mean JCT at max_tokens 1024 (1-3% at 512) for up to 1.2x the p99, as the exact-length
    # order does (docs/scheduling.md, "Loops last in the fallback").
    fallback_loops_last: bool = False
    # While the quality guard falls back, order by the prompt prefill still to pay (the least first, no
    # pre-emption; scheduling.PrefillFirst) instead of by arrival, when the prefill counts as work (the prefill
    # weight above 0); the outcome guard judges it against FCFS. Off by default: in the simulator on the Azure
    # 2023 conversation lengths it gave 0.89-0.92x FCFS's mean JCT at loads 0.7-0.9, but live (run 42, this CPU,
    # where the prefill was a small part of the work) 1.06-1.10x the FCFS order of the same jobs and 1.17-1.45x
    # the p99 (docs/scheduling.md, "The fallback orders by the prefill").
    fallback_by_prefill: bool = False
    # The outcome guard: from the last jobs that arrived an aging bound ago (finished, or censored), the mean JCT
    # of the jobs the policy ordered against the same jobs replayed under FCFS on the same slots. Above
    # 1 + outcome_tolerance over at least outcome_min_jobs judged jobs, every policy orders as FCFS; the policy is
    # tried again after outcome_retry_jobs jobs, doubling on every further trip (up to guard_window_jobs).
    outcome_guard: bool = True
    # How much slower than the FCFS counterfactual (a ratio above 1) the policy's jobs may be before it trips.
    outcome_tolerance: float = Field(default=0.05, ge=0.0)
    # Judged jobs (ordered by the policy, arrived an aging bound ago) needed before the outcome guard may trip.
    outcome_min_jobs: int = Field(default=50, ge=2)
    # Jobs served in FCFS order after a trip before the policy is tried again (doubles on every further trip).
    outcome_retry_jobs: int = Field(default=100, ge=1)
    # Re-predict at every window end, as the ELIS paper does. Off (the default): only where some prediction could
    # make the job yield (a job waits, and it starves or the yield rule could pass even at the job's longest
    # possible remaining length), plus a sample for the guard. On a CPU worker the predictor takes cores from
    # vLLM: re-predicting every window made ISRTF's windows 3-4% slower (docs/scheduling.md, run 15).
    repredict_every_window: bool = False
    repredict_sample_every: int = Field(default=4, ge=0)
    # Scale predictions per step (mean true / mean predicted remaining, learned from finished jobs) so an
    # admission prediction and a re-prediction after k windows compare fairly.
    calibrate_steps: bool = True
    # Predict every job's length at admission when a predictor is loaded, whatever the policy, so the guard
    # always has evidence (also while it falls back).
    shadow_predictions: bool = True
    # Store and publish a job without waiting for its admission prediction, which a background thread then makes
    # and stores (elis.api.deferred), when the prediction cannot change where the job waits: the order in force
    # does not read it (FCFS, srtf-oracle, MLFQ, SJF in a guard's FCFS fallback; ISRTF keeps its admission
    # predictions, which its worker re-predicts from), or live workers have more slots than
    # jobs queued or running (it starts at once whatever its score). On a CPU service the admission wait was 17-22%
    # of the mean JCT at a light load (run 47); at an overload, 1.8-3.2 s per FCFS submission (run 53).
    defer_idle_predictions: bool = True
    # The score-to-level edges (JSON, no torch needed); empty: elis/data/level_edges.json.
    level_edges: str = ""
    reconcile_interval_s: float = 5.0

    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    max_batch_file_mb: int = 200  # the largest batch input file (POST /v1/files), as OpenAI's limit
    max_batch_requests: int = 50_000  # the most requests in one batch, as OpenAI's limit
    # A batch request over its tenant's limit (active jobs, tokens in flight) waits up to this long for its jobs
    # to finish and free the room, re-checked every second, before it fails as a line of the error file.
    batch_limit_wait_s: float = 3600.0

    # Length predictor checkpoint; empty means the default one in cache_dir.
    predictor_checkpoint: str = ""
    encoder: str = ""  # empty: the bundled all-MiniLM-L6-v2 (BAAI/bge-base-en-v1.5 on a GPU)
    # torch threads for the predictor in API and workers: on a CPU shared with vLLM one thread answered in
    # 121 ms per job, two in 2,232 ms (docs/predictor.md).
    predictor_threads: int = 1
    # Seconds between checks for a new predictor checkpoint version (`elis predictor update`); 0: never reload.
    predictor_reload_s: float = 10.0
    # Every this many seconds each worker runs `elis predictor update` (from the last predictor_update_jobs
    # finished jobs) in a low-priority child process; 0: never (run the command yourself).
    predictor_update_every_s: float = Field(default=0.0, ge=0.0)
    predictor_update_jobs: int = Field(default=300, ge=15)
    # The loop rule (elis/predictor/loops.py): a greedy job (temperature 0) whose output's tail repeats itself
    # is predicted to use this share of its remaining token budget (172 of 181 flagged greedy outputs of four
    # sources ran to max_tokens 1024: docs/predictor.md, "The loop rule"); 0 turns the rule off for greedy jobs.
    predictor_loop_greedy_share: float = Field(default=1.0, ge=0.0, le=1.0)
    # The same for a sampled job (or one of unknown temperature): 9-32% of flagged outputs at temperature 0.7
    # left their loop; 0 turns the rule off for sampled jobs.
    predictor_loop_sampled_share: float = Field(default=0.8, ge=0.0, le=1.0)

    # A worker's Prometheus /metrics port (0: not served); one port per worker process on a host.
    worker_metrics_port: int = 0

    flower_user: str = "admin"  # `elis flower` basic-auth user
    flower_password: str = ""  # required by `elis flower`: there is no default password
    flower_port: int = 5555  # `elis flower` port
    # RabbitMQ's management API, for Flower's queue lengths; empty: the broker's host and credentials, port 15672.
    broker_api_url: str = ""

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    # Input bounds (docs/robustness.md). Bodies past max_body_bytes answer 413 before they are parsed.
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)

    # Authentication: "keys" (API keys, one tenant each; `elis keys create`), "none" (local use: every caller is
    # the admin of tenant "local"), or "auto": "none" when the API is bound to a loopback address, else "keys".
    auth: str = "auto"
    # Per-tenant admission limits (a key may lower them): jobs queued or running, tokens still to generate
    # over those jobs, and max_tokens of one job.
    tenant_max_active_jobs: int = Field(default=10_000, ge=1)
    tenant_max_tokens_in_flight: int = Field(default=10_000_000, ge=1)

    # Outages and lost messages (elis.tasks.recovery). A window whose database or broker is away waits with
    # back-off up to this long before handing its message back to the queue (it never consumes it).
    outage_wait_s: float = Field(default=600.0, ge=0.0)
    # A running job's lease: renewed at each window; past it, no live worker holds the job.
    lease_s: float = Field(default=120.0, gt=0.0)
    # A queued job whose message was published this long ago and never delivered is re-published when the
    # queue holds fewer messages than queued jobs (a purged or lost message).
    lost_after_s: float = Field(default=60.0, gt=0.0)
    # A job that makes no progress (no window committed) for this long is failed with the reason; 0: never.
    stuck_after_s: float = Field(default=6 * 3600.0, ge=0.0)

    # The consumer watchdog (elis.tasks.consumer_watchdog): every this many seconds a worker checks that it is
    # fed while messages wait and it has a free slot; two checks in a row without a delivery reconnect it to
    # the broker, so a silent stall lasts 1-2 periods. 0: off.
    consumer_watchdog_s: float = Field(default=3.0, ge=0.0)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.cache_dir / 'elis.sqlite3'}"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first call."""
    return Settings()
