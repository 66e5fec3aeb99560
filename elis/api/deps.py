"""Typed dependencies: settings, a database session, the tokenizer and the admission predictor."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from elis.config import Settings
from elis.storage.db import session_scope

log = logging.getLogger(__name__)


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.settings.resolved_database_url) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


class Tokenizer:
    """The served model's tokenizer and chat template, loaded once (the API tokenizes; workers never do)."""

    def __init__(self, model_path: str) -> None:
        from transformers import AutoTokenizer

        self.model_path = model_path
        self._tokenizer = AutoTokenizer.from_pretrained(model_path)

    @property
    def vocab_size(self) -> int:
        """Ids below this are the model's tokens (added special tokens included)."""
        return len(self._tokenizer)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode_text(self, text: str) -> list[int]:
        """A raw prompt, no chat template (OpenAI's completions endpoint)."""
        return list(self._tokenizer.encode(text, add_special_tokens=True))


@dataclass(frozen=True)
class AdmissionPrediction:
    """A job's predicted length at admission, and the prompt prior's score that went into it (stored with the
    job, so a worker whose prior has the same fingerprint need not read the prompt through the served model)."""

    tokens: float
    prior_score: float | None = None
    prior_fingerprint: str | None = None


class AdmissionPredictor:
    """Loads the length predictor on first use; a failure is logged and counted, never raised to the caller."""

    def __init__(self, checkpoint: str | None, threads: int = 1) -> None:
        self.checkpoint = checkpoint
        self.threads = threads
        self._predictor = None
        self._lock = threading.Lock()
        self.failures = 0
        self.unavailable: str | None = None

    def get(self):
        with self._lock:
            if self._predictor is None and self.unavailable is None:
                try:
                    import torch

                    from elis.predictor.serving import load_predictor

                    torch.set_num_threads(self.threads)
                    self._predictor = load_predictor(self.checkpoint)
                except Exception as exc:
                    self.unavailable = str(exc)
                    log.error("length predictor unavailable at admission: %s", exc)
            return self._predictor

    def warm(self) -> None:
        """Load the predictor and predict once (the prompt prior's model loads at its first score), so the first
        admitted job waits for neither."""
        if self.get() is not None:
            self.predict("Hello.")

    def predict(self, prompt: str, max_tokens: int | None = None,
                temperature: float | None = None) -> AdmissionPrediction | None:
        """The prompt's predicted length, within [0, max_tokens] when given; None when the predictor is away or
        fails (logged and counted)."""
        predictor = self.get()
        if predictor is None:
            return None
        try:
            from elis.predictor.serving import PredictionInput

            # the temperature, as the worker passes it at every window: a ranker trained with the greedy flag
            # reads it at admission too
            item = PredictionInput(prompt=prompt, max_tokens=max_tokens, temperature=temperature)
            tokens = float(predictor.predict([item])[0])
            prior = predictor.prior_score(prompt)  # cached by the prediction just made
        except Exception:
            self.failures += 1
            log.exception("initial prediction failed; the job falls back to FCFS order")
            return None
        score, fingerprint = prior or (None, None)
        tokens = max(tokens, 0.0) if max_tokens is None else min(max(tokens, 0.0), float(max_tokens))
        return AdmissionPrediction(tokens, prior_score=score, prior_fingerprint=fingerprint)
