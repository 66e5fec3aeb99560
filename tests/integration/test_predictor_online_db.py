"""`elis predictor update` from finished jobs in PostgreSQL: the jobs are stored the way the service stores
them (admission, then a claim and a compare-and-set commit per 50-token window), with the served model's
real tokenizer, the shipped ranker checkpoint and the bundled encoder."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elis import clock
from elis.predictor.checkpoint import file_sha256, load_checkpoint
from elis.predictor.features import flatten, prompt_key, split_of
from elis.predictor.online import finished_job_records
from elis.predictor.serving import SHIPPED_RANKER
from elis.storage import jobs as store
from elis.storage.db import session_scope

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 50
HOLDOUT = 0.3  # the CLI's default --holdout

SHORT_ASKS = ["What is the capital of {t}? Answer in one word.", "Name the currency of {t}, nothing else.",
              "Is {t} in Europe? Reply yes or no."]
LONG_ASKS = ["Write a detailed, multi-paragraph essay about the history of {t}.",
             "Explain step by step, in depth, how the economy of {t} developed over the last century.",
             "Write a long travel guide to {t}, covering food, culture, cities and history."]
PLACES = ["France", "Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "Canada", "India", "Spain", "Ghana",
          "Italy", "Nepal", "Cuba", "Poland", "Vietnam", "Morocco", "Greece", "Mexico", "Finland", "Brazil",
          "Iceland", "Jordan", "Laos", "Malta", "Oman", "Qatar", "Samoa", "Togo", "Uganda"]
SENTENCES = ["The region has a long and varied history that shaped its people.",
             "Its cuisine mixes local grains, spices and recipes from traders.",
             "Cities grew along rivers and coasts, where trade was easiest.",
             "In the twentieth century industry and tourism changed the economy.",
             "Visitors remember the markets, the music and the warm evenings."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The served model's tokenizer (the token ids jobs store are its ids): the prepared model's, else the
    same tokenizer read from the bundled GGUF file."""
    from transformers import AutoTokenizer

    from elis.config import Settings
    from elis.models_prepare import GGUF_FILE, ModelPrepareError, bundled_gguf_dir, resolve_model

    settings = Settings()
    try:
        return AutoTokenizer.from_pretrained(resolve_model(settings.model, settings.models_dir))
    except ModelPrepareError:
        folder = tmp_path_factory.mktemp("tokenizer")
        AutoTokenizer.from_pretrained(bundled_gguf_dir(), gguf_file=GGUF_FILE).save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder)


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)  # as the worker's engine decodes


class Service:
    """Stores jobs through elis.storage.jobs, in the order and with the calls the API and the worker make."""

    def __init__(self, url: str, tokenizer) -> None:
        self.url, self.tokenizer = url, tokenizer
        self.t0 = clock.now() - timedelta(hours=1)

    def admit(self, prompt: str, at: float, *, force_length: int | None = None, max_tokens: int = 1024) -> str:
        messages = [{"role": "user", "content": prompt}]
        prompt_ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if not isinstance(prompt_ids, list):  # transformers 5 answers a BatchEncoding
            prompt_ids = list(prompt_ids["input_ids"])
        new = store.NewJob(policy="isrtf", prompt=prompt, messages=messages, prompt_ids=list(prompt_ids),
                           max_tokens=max_tokens, temperature=0.7, top_p=1.0, stop=[], stop_token_ids=[],
                           true_output_tokens=force_length, force_length=force_length is not None,
                           workload="online-test")
        with session_scope(self.url) as session:
            return store.create_job(session, new=new, now=self.t0 + timedelta(seconds=at), initial_prediction=100.0).id

    def run(self, job_id: str, output_ids: list[int], at: float, *, finish: str | None = "eos") -> None:
        """Windows of W tokens, each claimed and committed like the worker's; the job yields after each
        window but the last, which ends it with `finish` (None: it stays queued, unfinished)."""
        windows = [output_ids[i : i + WINDOW] for i in range(0, len(output_ids), WINDOW)]
        generated: list[int] = []
        for index, new_ids in enumerate(windows):
            started = self.t0 + timedelta(seconds=at + index * 0.01)
            ended = started + timedelta(seconds=0.005)
            generated += new_ids
            last = index == len(windows) - 1
            with session_scope(self.url) as session:
                assert store.claim_window(session, job_id=job_id, window_index=index, worker="w1",
                                          redelivered=False, now=started) is not None
            commit = store.WindowCommit(
                job_id=job_id, window_index=index, worker="w1", new_ids=new_ids,
                output_text=decode(self.tokenizer, generated), started_at=started, ended_at=ended,
                compute_s=0.005, predict_s=None, enqueued_at=started, prediction_before=100.0,
                prediction_after=None if last else 80.0, finish_reason=finish if last else None,
                yielded=not last, priority=None if last else 3,
            )
            with session_scope(self.url) as session:
                assert store.commit_window(session, commit=commit) is not None

    def fail(self, job_id: str, at: float) -> None:
        with session_scope(self.url) as session:
            store.fail_job(session, job_id=job_id, error="engine error: test", now=self.t0 + timedelta(seconds=at))

    def cancel(self, job_id: str, at: float) -> None:
        with session_scope(self.url) as session:
            store.request_cancel(session, job_id=job_id, now=self.t0 + timedelta(seconds=at))


def answer_ids(tokenizer, num_tokens: int, seed: int) -> list[int]:
    """About `num_tokens` token ids of a plausible answer (cut on the served tokenizer's ids)."""
    text = " ".join(SENTENCES[(seed + i) % len(SENTENCES)] for i in range(num_tokens // 8 + 2))
    return tokenizer.encode(text, add_special_tokens=False)[:num_tokens]


def straddling_ids(tokenizer) -> list[int]:
    """About 120 token ids where token 50 ends in the middle of an emoji's bytes."""
    for pad in range(80):
        text = "Sure! " + "ok " * pad + "Here you go: \U0001F30D\U0001F389 and the rest of the answer. " * 12
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= 120 and decode(tokenizer, ids[:WINDOW]).endswith("\ufffd"):
            return ids[:120]
    raise AssertionError("the tokenizer never split an emoji at token 50")


def test_finished_job_records_are_the_done_unforced_jobs_with_the_text_of_each_window(db_url, tokenizer):
    service = Service(db_url, tokenizer)
    done: dict[str, list[int]] = {}
    # finished on their own: EOS, a stop string, max_tokens; the hand-checked one has 120 tokens
    hand = straddling_ids(tokenizer)
    for i, (ids, finish) in enumerate([(hand, "eos"), (answer_ids(tokenizer, 37, 1), "stop"),
                                       (answer_ids(tokenizer, 100, 2), "length"), (answer_ids(tokenizer, 263, 3), "eos")]):
        job_id = service.admit(f"Question {i} about {PLACES[i]}?", at=10 * i, max_tokens=100 if finish == "length" else 1024)
        service.run(job_id, ids, at=10 * i + 1, finish=finish)
        done[job_id] = ids
    hand_id = next(iter(done))
    forced = service.admit("Replay a trace job.", at=50, force_length=80)
    service.run(forced, answer_ids(tokenizer, 80, 4), at=51)  # a forced length: finished, but excluded
    failed = service.admit("A job the engine failed.", at=60)
    service.run(failed, answer_ids(tokenizer, 100, 5), at=61, finish=None)
    service.fail(failed, at=62)
    running = service.admit("A job still in the queue after two windows.", at=70)
    service.run(running, answer_ids(tokenizer, 100, 6), at=71, finish=None)
    service.cancel(service.admit("A job cancelled in the queue.", at=80), at=81)

    records = finished_job_records(db_url, 100, WINDOW, lambda ids: decode(tokenizer, ids))
    assert [r["id"] for r in records] == list(done)  # oldest first, nothing else
    assert [r["id"] for r in finished_job_records(db_url, 2, WINDOW, lambda ids: decode(tokenizer, ids))] == \
        list(done)[-2:]  # the limit keeps the LAST finished jobs

    # hand check: 120 tokens -> examples at 0, 50, 100 tokens with 120, 70, 20 to go; the text at each step is
    # what the first 50k tokens decode to, without the half emoji token 50 ends in
    record = next(r for r in records if r["id"] == hand_id)
    examples = flatten([record])
    assert [(e.num_generated, e.remaining) for e in examples] == [(0, 120), (50, 70), (100, 20)]
    seen_by_worker = decode(tokenizer, hand[:WINDOW])
    assert seen_by_worker.endswith("\ufffd")
    assert examples[1].output_text == seen_by_worker.rstrip("\ufffd")
    assert examples[0].output_text == ""
    assert examples[2].output_text == decode(tokenizer, hand[:100]).rstrip("\ufffd")
    assert record["prompt"] == "Question 0 about France?" and record["max_tokens"] == 1024
    assert record["prompt_id"] == prompt_key("Question 0 about France?") and record["sample"] == 0

    for record in records:  # every window of every job: the true prefix, the true remaining tokens
        ids = done[record["id"]]
        full = decode(tokenizer, ids)
        assert record["output_text"] == full and record["output_ids"] == ids
        examples = flatten([record])
        assert len(examples) == (len(ids) - 1) // WINDOW + 1
        for e in examples:
            assert e.remaining == len(ids) - e.num_generated > 0
            assert full.startswith(e.output_text)
            assert e.output_text == decode(tokenizer, ids[: e.num_generated]).rstrip("\ufffd")


# -- the update through the CLI -------------------------------------------------------------------------


def holds_out(prompt: str) -> bool:
    return split_of("update\0" + prompt, (1 - HOLDOUT, HOLDOUT, 0.0)) != "train"  # online.split_adapt_holdout


def store_traffic(service: Service, tokenizer, *, reversed_in_adapt: bool, reversed_in_holdout: bool) -> None:
    """60 finished jobs, half short asks and half long asks. Natural lengths: short asks 10-40 tokens, long
    asks 250-400; reversed: the other way round (a signal the shipped ranker has backwards)."""
    for i in range(60):
        long_ask = i % 2 == 1
        template = (LONG_ASKS if long_ask else SHORT_ASKS)[(i // 2) % 3]
        prompt = template.format(t=PLACES[(i // 2) % len(PLACES)])
        flip = reversed_in_holdout if holds_out(prompt) else reversed_in_adapt
        long_answer = long_ask != flip
        length = 250 + (i * 37) % 150 if long_answer else 10 + (i * 7) % 30
        job_id = service.admit(prompt, at=i)
        service.run(job_id, answer_ids(tokenizer, length, i), at=i + 0.5)


def run_update(db_url: str, checkpoint: Path, tmp_path: Path, tokenizer, monkeypatch, *extra: str) -> tuple[int, str]:
    from elis.cli import app
    from elis.config import get_settings

    model_dir = tmp_path / "served-tokenizer"
    tokenizer.save_pretrained(model_dir)
    monkeypatch.setenv("ELIS_MODEL", str(model_dir))  # the CLI decodes with the served model's tokenizer
    monkeypatch.setenv("ELIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ELIS_PREDICTOR_CHECKPOINT", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["predictor", "update", "--database-url", db_url, "--jobs", "60",
                                          "--checkpoint", str(checkpoint), "--out", str(checkpoint), *extra])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output + (repr(result.exception) if result.exit_code not in (0, 1) else "")


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ranker"
    shutil.copytree(SHIPPED_RANKER.parent, folder)
    return folder / SHIPPED_RANKER.name


def test_update_learns_a_signal_from_the_database_and_writes_the_next_version(db_url, tokenizer, checkpoint,
                                                                              tmp_path, monkeypatch):
    store_traffic(Service(db_url, tokenizer), tokenizer, reversed_in_adapt=True, reversed_in_holdout=True)
    version = load_checkpoint(checkpoint).metadata.get("version", 1)
    edges_before = (checkpoint.parent / "level_edges.json").read_text()
    # 42 adapting jobs: below the default 200 only the calibration is refitted, which cannot turn a ranking
    # round; let the head be fine-tuned on them.
    code, output = run_update(db_url, checkpoint, tmp_path, tokenizer, monkeypatch, "--min-finetune-jobs", "10")
    assert code == 0, output
    assert "accepted" in output
    updated = load_checkpoint(checkpoint).metadata
    assert updated["version"] == version + 1
    report = updated["update"]
    assert report["holdout_pooled_tau_after"] > report["holdout_pooled_tau_before"]
    assert report["adapt_jobs"] + report["holdout_jobs"] == 60
    assert (checkpoint.parent / "level_edges.json").read_text() != edges_before  # rewritten beside it


def test_update_refuses_jobs_that_teach_it_nothing_better(db_url, tokenizer, checkpoint, tmp_path, monkeypatch):
    # version 2 learns this traffic (its lengths follow the kind of ask)
    service = Service(db_url, tokenizer)
    store_traffic(service, tokenizer, reversed_in_adapt=False, reversed_in_holdout=False)
    code, output = run_update(db_url, checkpoint, tmp_path, tokenizer, monkeypatch)
    assert code == 0 and load_checkpoint(checkpoint).metadata["version"] == 2, output
    # the last 60 finished jobs are the same traffic again: a calibration refitted on them ranks the held-back
    # jobs no better than version 2, so nothing is written
    service.t0 += timedelta(minutes=5)
    store_traffic(service, tokenizer, reversed_in_adapt=False, reversed_in_holdout=False)
    before = file_sha256(checkpoint)
    edges = (checkpoint.parent / "level_edges.json").read_text()
    code, output = run_update(db_url, checkpoint, tmp_path, tokenizer, monkeypatch, "--no-head")
    assert code == 1, output
    assert "refused" in output and "does not beat" in output
    assert file_sha256(checkpoint) == before
    assert (checkpoint.parent / "level_edges.json").read_text() == edges
