"""The trace engine: every job generates exactly its known output length (trace replay, the oracle).

It runs the real model (so compute and batching are real) but ignores EOS and stop strings; the worker ends
the job at its known length (`JobSnapshot.token_budget`: the trace's output length, below or at max_tokens).
"""

from __future__ import annotations

from dataclasses import replace

from elis.tasks.contracts import Engine, SamplingSettings, WindowOutput


class TraceEngine(Engine):
    """Wraps a real engine and forces each window to its full token budget."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def run_window(
        self, prompt_ids: list[int], generated_ids: list[int], max_new_tokens: int, sampling: SamplingSettings
    ) -> WindowOutput:
        forced = replace(sampling, force_length=True, stop=(), stop_token_ids=())
        output = self.inner.run_window(prompt_ids, generated_ids, max_new_tokens, forced)
        return replace(output, finished=False, reason=None)

    def decode(self, token_ids: list[int]) -> str:
        return self.inner.decode(token_ids)

    def close(self) -> None:
        self.inner.close()
