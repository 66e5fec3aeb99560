"""The window task's success path, fast: a deterministic scripted engine, the embedded SQLite database, and a
publisher that records instead of reaching RabbitMQ (the integration and e2e tiers cover the real broker and
vLLM). Yield, continue, re-predict and publish all go through `run_job_windows` as in the worker."""

from __future__ import annotations

import pytest

from elis import clock
from elis.config import Settings
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.migrate import upgrade
from elis.tasks.contracts import Engine, FinishReason, WindowOutput
from elis.tasks.runtime import WorkerRuntime
from elis.tasks.scheduling_setup import build_scheduler
from elis.tasks.windows import run_job_windows


class ScriptedEngine(Engine):
    """Generates token 7 until a job reaches the output length scripted for its first prompt token, then EOS."""

    def __init__(self, lengths: dict[int, int]) -> None:
        self.lengths = lengths
        self.calls = 0

    def run_window(self, prompt_ids, generated_ids, max_new_tokens, sampling):
        self.calls += 1
        remaining = self.lengths[prompt_ids[0]] - len(generated_ids)
        count = min(max_new_tokens, remaining)
        done = count == remaining
        return WindowOutput(new_ids=[7] * count, finished=done, reason=FinishReason.EOS if done else None,
                            compute_s=0.01 * count)

    def decode(self, token_ids):
        return "x" * len(token_ids)


class ScriptedPredictor:
    """Predicts a fixed remaining length per job prompt; counts calls."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining
        self.calls = 0

    def predict_one(self, item) -> float:
        self.calls += 1
        return self.remaining


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, int, int | None]] = []

    def __call__(self, settings, *, job_id, window_index, priority):
        self.published.append((job_id, window_index, priority))


@pytest.fixture()
def settings(tmp_path) -> Settings:
    url = f"sqlite:///{tmp_path / 'elis.sqlite3'}"
    upgrade(url)
    return Settings(database_url=url, cache_dir=tmp_path, window_tokens=50, guard_start_in_fallback=False,
                    yield_uncertainty=0.3, aging_floor_s=3600.0)


def submit(settings: Settings, policy: str, first_token: int, prediction: float | None, at=None) -> str:
    new = store.NewJob(policy=policy, prompt=f"p{first_token}", messages=[{"role": "user", "content": "p"}],
                       prompt_ids=[first_token, 2, 3], max_tokens=500, temperature=0.0, top_p=1.0, stop=[],
                       stop_token_ids=[])
    with session_scope(settings.resolved_database_url) as session:
        job = store.create_job(session, new=new, now=at or clock.now(), initial_prediction=prediction)
        store.mark_published(session, job_id=job.id, window_index=0, priority=5)
        return job.id


def runtime(settings, engine, predictor=None) -> tuple[WorkerRuntime, Recorder]:
    recorder = Recorder()
    return WorkerRuntime(settings=settings.model_copy(update={"policy": "isrtf"}), engine=engine, worker_name="w1",
                         scheduler=build_scheduler(settings), predictor=predictor, publish=recorder), recorder


def stored(settings, job_id):
    with session_scope(settings.resolved_database_url) as session:
        job = store.get_job(session, job_id=job_id)
        return job.status, job.num_output_tokens, [(w.index, w.prediction_after, w.priority) for w in job.windows]


def test_isrtf_re_predicts_then_yields_to_a_much_shorter_head_and_publishes_its_continuation(settings):
    long_job = submit(settings, "isrtf", 1, 400.0)
    submit(settings, "isrtf", 2, 20.0)  # waiting: much shorter
    rt, recorder = runtime(settings, ScriptedEngine({1: 300, 2: 20}), ScriptedPredictor(250.0))
    assert run_job_windows(rt, long_job, 0, redelivered=False) == "queued"
    level = rt.scheduler.levels.level(250.0)
    assert recorder.published == [(long_job, 1, level)]
    assert stored(settings, long_job) == ("queued", 50, [(0, 250.0, level)])
    assert rt.predictor.calls == 1


def test_a_head_sooner_only_within_the_margin_lets_the_running_job_keep_its_slot_to_the_end(settings):
    running = submit(settings, "isrtf", 1, 120.0)
    submit(settings, "isrtf", 2, 95.0)  # sooner than 100, but not by 30% of it
    rt, recorder = runtime(settings, ScriptedEngine({1: 150, 2: 95}), ScriptedPredictor(100.0))
    assert run_job_windows(rt, running, 0, redelivered=False) == "done"
    status, tokens, windows = stored(settings, running)
    assert (status, tokens, len(windows)) == ("done", 150, 3) and recorder.published == []


def test_fcfs_runs_a_job_to_completion_under_one_message_without_predicting(settings):
    job_id = submit(settings, "fcfs", 1, None)
    submit(settings, "fcfs", 2, None)
    predictor = ScriptedPredictor(1.0)
    rt, recorder = runtime(settings, ScriptedEngine({1: 120, 2: 10}), predictor)
    assert run_job_windows(rt, job_id, 0, redelivered=False) == "done"
    assert stored(settings, job_id)[:2] == ("done", 120) and recorder.published == [] and predictor.calls == 0


def test_during_a_guard_fallback_isrtf_never_yields_and_re_predicts_only_as_the_guards_sample(settings):
    long_job = submit(settings, "isrtf", 1, 400.0)
    submit(settings, "isrtf", 2, 20.0)
    rt, recorder = runtime(settings, ScriptedEngine({1: 100, 2: 20}), ScriptedPredictor(250.0))
    rt.scheduler.guard.fallback = True
    # Pre-emption not judged yet: every window is the guard's sample (the last one has nothing left to rank).
    assert run_job_windows(rt, long_job, 0, redelivered=False) == "done"
    assert recorder.published == [] and rt.predictor.calls == 1
    assert [w[1] for w in stored(settings, long_job)[2]] == [250.0, None]
    # Judged, with no sampling: a fallback window re-predicts nothing (FCFS order needs none).
    other = submit(settings, "isrtf", 3, 400.0)
    rt, recorder = runtime(settings.model_copy(update={"repredict_sample_every": 0}), ScriptedEngine({3: 100}),
                           ScriptedPredictor(250.0))
    rt.scheduler.guard.fallback, rt.scheduler.guard.preempt_judged = True, True
    assert run_job_windows(rt, other, 0, redelivered=False) == "done"
    assert recorder.published == [] and rt.predictor.calls == 0


def test_a_duplicate_delivery_of_a_finished_window_is_skipped(settings):
    job_id = submit(settings, "fcfs", 1, None)
    rt, _ = runtime(settings, ScriptedEngine({1: 30}))
    assert run_job_windows(rt, job_id, 0, redelivered=False) == "done"
    engine_calls = rt.engine.calls
    assert run_job_windows(rt, job_id, 0, redelivered=True) == "skipped" and rt.engine.calls == engine_calls


def test_with_nothing_waiting_a_window_end_does_not_re_predict(settings):
    job_id = submit(settings, "isrtf", 1, 120.0)
    rt, recorder = runtime(settings.model_copy(update={"repredict_sample_every": 0}), ScriptedEngine({1: 150}),
                           ScriptedPredictor(100.0))
    rt.scheduler.guard.preempt_judged = True  # else every window is the guard's sample
    assert run_job_windows(rt, job_id, 0, redelivered=False) == "done"
    assert rt.predictor.calls == 0 and recorder.published == []
    assert [w[1] for w in stored(settings, job_id)[2]] == [None, None, None]


def test_a_skipped_re_prediction_leaves_the_last_prediction_clipped_to_the_cap_so_it_cannot_force_a_yield(settings):
    # Admitted at 5,000 tokens (above its cap of 500); a head predicted at 45 waits. With the margin at 0.9 of the
    # job's score, no prediction of at most 450 remaining tokens makes it yield, so the window skips the predictor,
    # and the old 5,000 (clipped to 450) must not make it yield either.
    job_id = submit(settings, "isrtf", 1, 5000.0)
    submit(settings, "isrtf", 2, 45.0)
    rt, recorder = runtime(settings.model_copy(update={"repredict_sample_every": 0, "yield_uncertainty": 0.9}),
                           ScriptedEngine({1: 150, 2: 45}), ScriptedPredictor(100.0))
    rt.scheduler.guard.preempt_judged = True  # else every window is the guard's sample
    assert run_job_windows(rt, job_id, 0, redelivered=False) == "done"
    assert rt.predictor.calls == 0 and recorder.published == []


def test_loops_last_in_a_fallback_moves_a_greedy_loop_behind_the_waiting_job_at_a_level_below_it(settings):
    # The scripted text is "xxxx...": a loop from 100 characters on, and the job is greedy (temperature 0).
    looping = submit(settings, "isrtf", 1, 100.0)
    submit(settings, "isrtf", 2, 100.0)
    rt, recorder = runtime(settings.model_copy(update={"fallback_loops_last": True, "repredict_sample_every": 0}),
                           ScriptedEngine({1: 500, 2: 20}), ScriptedPredictor(100.0))
    rt.scheduler.guard.fallback, rt.scheduler.guard.preempt_judged = True, True
    rt.scheduler.typical_tokens = 200.0  # the mean finished length; a loop with more left gives way
    assert run_job_windows(rt, looping, 0, redelivered=False) == "queued"
    # Flagged after 150 tokens (the first window end with more than 100 repeating characters): 350 left under
    # max_tokens 500, queued at the level of 350 tokens.
    level = rt.scheduler.levels.level(350.0)
    assert level < rt.scheduler.levels.level(0.0)  # below every unflagged job (FCFS order scores 0)
    assert recorder.published == [(looping, 3, level)] and rt.predictor.calls == 0
    assert rt.scheduler.ordering("isrtf") == "fcfs, loops last (guard fallback)"


@pytest.mark.parametrize("loops_last, typical", [(False, 200.0), (True, 450.0)])
def test_loops_last_off_or_a_short_remainder_keeps_the_loop_running_in_fcfs_order(settings, loops_last, typical):
    looping = submit(settings, "isrtf", 1, 100.0)
    submit(settings, "isrtf", 2, 100.0)
    rt, recorder = runtime(settings.model_copy(update={"fallback_loops_last": loops_last, "repredict_sample_every": 0}),
                           ScriptedEngine({1: 500, 2: 20}), ScriptedPredictor(100.0))
    rt.scheduler.guard.fallback, rt.scheduler.guard.preempt_judged = True, True
    rt.scheduler.typical_tokens = typical  # 450: the loop has 350 left once it is flagged
    assert run_job_windows(rt, looping, 0, redelivered=False) == "done"
    assert recorder.published == [] and stored(settings, looping)[:2] == ("done", 500)


class LandsMidWindow(ScriptedEngine):
    """A scripted engine during whose first window the API's deferred admission prediction is stored (as the
    background thread of `elis.api.deferred` does while the job runs)."""

    def __init__(self, lengths, settings, job_id: str, tokens: float, prior_score: float) -> None:
        super().__init__(lengths)
        self.settings, self.job_id, self.tokens, self.prior_score = settings, job_id, tokens, prior_score

    def run_window(self, prompt_ids, generated_ids, max_new_tokens, sampling):
        if self.calls == 0:
            with session_scope(self.settings.resolved_database_url) as session:
                assert store.record_admission_prediction(session, job_id=self.job_id, tokens=self.tokens,
                                                         prior_score=self.prior_score, prior_fingerprint="f" * 16)
        return super().run_window(prompt_ids, generated_ids, max_new_tokens, sampling)


class RecordingPredictor(ScriptedPredictor):
    def __init__(self, remaining: float) -> None:
        super().__init__(remaining)
        self.items = []

    def predict_one(self, item) -> float:
        self.items.append(item)
        return super().predict_one(item)


def test_a_job_admitted_before_its_prediction_decides_its_first_window_end_on_the_prediction_stored_meanwhile(
        settings):
    """Admitted while a slot was free, the job was claimed with no prediction; the one stored during its first
    window orders it at the window end (a long job yields to a much shorter head) and carries the prior's score
    to the worker's re-prediction."""
    job = submit(settings, "isrtf", 1, None)
    submit(settings, "isrtf", 2, 20.0)  # came while the first ran: much shorter
    engine = LandsMidWindow({1: 300, 2: 20}, settings, job, tokens=400.0, prior_score=1.25)
    rt, recorder = runtime(settings, engine)  # no worker predictor: the stored prediction alone decides
    assert run_job_windows(rt, job, 0, redelivered=False) == "queued"
    level = rt.scheduler.levels.level(400.0)
    assert recorder.published == [(job, 1, level)]
    with session_scope(settings.resolved_database_url) as session:
        assert store.stored_admission(session, job_id=job) == (400.0, 400.0, 1.25, "f" * 16)

    carried = submit(settings, "isrtf", 3, None)
    predictor = RecordingPredictor(250.0)
    rt, _ = runtime(settings, LandsMidWindow({3: 300}, settings, carried, tokens=380.0, prior_score=0.5),
                    predictor)
    run_job_windows(rt, carried, 0, redelivered=False)
    assert predictor.items and predictor.items[0].prior_score == 0.5
    assert predictor.items[0].prior_fingerprint == "f" * 16


def test_a_job_whose_admission_prediction_has_not_come_keeps_its_slot_instead_of_predicting_for_two_windows(
        settings):
    """Until its third window end the worker waits for the API's deferred prediction rather than read the prompt
    through the served model itself; then, still without one, it predicts as for a failed admission."""
    job = submit(settings, "isrtf", 1, None)
    submit(settings, "isrtf", 2, 20.0)  # waiting: much shorter
    predictor = ScriptedPredictor(250.0)
    rt, recorder = runtime(settings, ScriptedEngine({1: 300, 2: 20}), predictor)
    assert run_job_windows(rt, job, 0, redelivered=False) == "queued"
    level = rt.scheduler.levels.level(250.0)
    assert predictor.calls == 1 and recorder.published == [(job, 3, level)]
    assert stored(settings, job) == ("queued", 150, [(0, None, None), (1, None, None), (2, 250.0, level)])


def test_the_prior_score_stored_at_admission_reaches_the_workers_re_prediction(settings):
    """The API stores the prompt prior's admission score with the job; the window task carries it from the stored
    row (JobSnapshot) into the re-prediction's input, so the worker need not read the prompt itself."""
    new = store.NewJob(policy="isrtf", prompt="p1", messages=[{"role": "user", "content": "p"}], prompt_ids=[1, 2, 3],
                       max_tokens=500, temperature=0.0, top_p=1.0, stop=[], stop_token_ids=[])
    with session_scope(settings.resolved_database_url) as session:
        job = store.create_job(session, new=new, now=clock.now(), initial_prediction=400.0, prior_score=-0.75,
                               prior_fingerprint="0123456789abcdef").id
        store.mark_published(session, job_id=job, window_index=0, priority=5)
    submit(settings, "isrtf", 2, 20.0)  # a much shorter job waits: the window end re-predicts
    predictor = RecordingPredictor(250.0)
    rt, _ = runtime(settings, ScriptedEngine({1: 300, 2: 20}), predictor)
    run_job_windows(rt, job, 0, redelivered=False)
    item = predictor.items[0]
    assert (item.prior_score, item.prior_fingerprint) == (-0.75, "0123456789abcdef")
    assert item.prompt == "p1" and item.num_generated == 50
