"""A job cut into 50-token windows (each re-prefilling prompt + tokens so far) produces exactly the token ids
of one uninterrupted generation: greedy decoding, float32 (bfloat16 rounds prefill and decode differently)."""

from __future__ import annotations

import pytest

from elis.config import get_settings
from elis.models_prepare import resolve_model
from elis.tasks.contracts import SamplingSettings
from tests.e2e.conftest import wait_done

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPTS = ["Explain how a bicycle works, step by step.", "Write a short story about a lighthouse keeper."]


def test_windowed_generation_equals_one_uninterrupted_generation(stack):
    with stack.api("mlfq") as client:
        ids = [client.post("/v1/jobs", json={"prompt": p, "max_tokens": 180, "temperature": 0.0}).json()["id"]
               for p in PROMPTS]
        jobs = []
        for job_id in ids:
            wait_done(client, job_id)
            jobs.append(client.get(f"/v1/jobs/{job_id}").json())
    assert any(job["num_windows"] >= 3 for job in jobs), "the test needs jobs that span several windows"

    from sqlalchemy import select

    from elis.storage.db import session_scope
    from elis.storage.models import Job
    from elis.workers.vllm_engine import VllmConfig, VllmEngine

    with session_scope(stack.db_url) as session:
        rows = {j.id: (list(j.prompt_ids), list(j.generated_ids)) for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
    settings = get_settings()
    engine = VllmEngine(VllmConfig(model=resolve_model(settings.model, settings.models_dir), dtype="float32",
                                   max_num_seqs=1, kv_cache_gib=1))
    try:
        for job_id in ids:
            prompt_ids, windowed = rows[job_id]
            reference = engine.run_window(prompt_ids, [], 180, SamplingSettings(temperature=0.0))
            assert windowed == reference.new_ids
    finally:
        engine.close()
