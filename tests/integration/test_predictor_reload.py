"""A new predictor checkpoint version reaches a running API without a restart (real PostgreSQL and
RabbitMQ; a fake encoder stands in for MiniLM so the test needs no weights)."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from elis.api.app import create_app
from elis.config import get_settings
from elis.predictor import serving
from elis.predictor.calibration import StepCalibration
from elis.predictor.checkpoint import save_checkpoint
from elis.predictor.corpus_eval import split_in_distribution
from elis.predictor.fakes import FakeEmbeddingCache, FakeEncoder, fake_record
from elis.predictor.features import flatten
from elis.predictor.ranker import RankerConfig, arrays_of, ranker_metadata, train_ranker

pytestmark = pytest.mark.integration


def _write_version(path, ranker, scale: float, version: int) -> None:
    calibration = ranker.calibration
    knots = tuple((xs, tuple(y * scale for y in ys)) for xs, ys in calibration.knots)
    scaled = type(ranker)(ranker.head, ranker.config, StepCalibration(calibration.buckets, knots))
    metadata = {**ranker_metadata(scaled), "encoder": "fake-encoder", "encoder_dim": 8, "max_length": 64,
                "prompt_budget": 16, "features": "ranker", "window_tokens": 50,
                "edges": [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 900.0], "num_priority_levels": 10,
                "version": version}
    save_checkpoint(path, scaled.head, metadata)


def test_the_api_serves_a_new_checkpoint_version_without_a_restart(settings, tmp_path, monkeypatch, request):
    rng = random.Random(0)
    records = [fake_record(i, rng) for i in range(200)]
    splits = split_in_distribution(records)
    cache = FakeEmbeddingCache()
    config = RankerConfig(max_epochs=10, hidden=32, projection_dim=4)
    ranker, _ = train_ranker(arrays_of(cache, flatten(splits["train"]), config),
                             arrays_of(cache, flatten(splits["val"]), config), config, 8)
    path = tmp_path / "predictor.pt"
    _write_version(path, ranker, 1.0, 1)
    monkeypatch.setattr(serving, "load_encoder", lambda name: FakeEncoder())
    monkeypatch.setenv("ELIS_PREDICTOR_RELOAD_S", "0.01")  # load_predictor reads the process's settings
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    api_settings = settings.model_copy(update={"predictor_checkpoint": str(path), "predictor_reload_s": 0.01,
                                               "policy": "ssjf", "guard_start_in_fallback": False})
    body = {"prompt": "Write a detailed essay about the moon. (#1)", "max_tokens": 1024}
    with TestClient(create_app(api_settings)) as client:
        first = client.get(client.post("/v1/jobs", json=body).json()["url"]).json()
        _write_version(path, ranker, 3.0, 2)  # what `elis predictor update` does: a new file in place
        second = client.get(client.post("/v1/jobs", json=body).json()["url"]).json()
    before = first["initial_prediction"]
    after = second["initial_prediction"]
    assert before is not None and before > 0
    assert after == pytest.approx(min(3.0 * before, 1024), rel=0.05)
