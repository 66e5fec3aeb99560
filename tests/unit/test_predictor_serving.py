"""Checkpoint round trip and the batched, failure-tolerant serving front (no encoder needed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from elis.predictor.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from elis.predictor.fakes import FakePredictor
from elis.predictor.features import PredictionInput
from elis.predictor.head import LengthHead, TargetTransform
from elis.predictor.serving import BatchingPredictor, PredictorUnavailable, load_predictor


def _metadata(input_dim: int) -> dict:
    return {
        "encoder": "all-MiniLM-L6-v2",
        "encoder_dim": input_dim - 1,
        "max_length": 256,
        "prompt_budget": 96,
        "features": "cls+step",
        "window_tokens": 50,
        "head": {"input_dim": input_dim, "hidden": 32, "num_layers": 3, "dropout": 0.0},
        "target_transform": {"name": "log1p", "scale": 100.0},
        "edges": [10.0, 20.0, 40.0],
        "dataset": {"sha256": "abc", "ood_sources": ["seed_tasks"], "split_fractions": [0.8, 0.1, 0.1]},
    }


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip_keeps_predictions_and_metadata(tmp_path: Path, half: bool):
    torch.manual_seed(0)
    head = LengthHead(9, hidden=32, num_layers=3)
    head.set_normalization(torch.randn(50, 9) * 3 + 1)
    head.eval()
    x = torch.randn(20, 9)
    before = head(x)
    path = save_checkpoint(tmp_path / "p.pt", head, _metadata(9), half=half)
    loaded = load_checkpoint(path)
    after = loaded.head(x)
    assert loaded.metadata == _metadata(9)
    if half:
        assert torch.allclose(before, after, atol=0.05)
    else:
        assert torch.equal(before, after)
    assert loaded.transform == TargetTransform("log1p", 100.0)


def test_a_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(PredictorUnavailable):
        load_predictor(tmp_path / "nothing.pt")


def test_target_transforms_invert():
    tokens = torch.tensor([0.0, 1.0, 49.0, 1000.0])
    for name in ("log1p", "raw"):
        transform = TargetTransform(name)
        assert torch.allclose(transform.inverse(transform.forward(tokens)), tokens, atol=1e-3)
    assert TargetTransform("raw").inverse(torch.tensor([-3.0])).item() == 0.0


def test_concurrent_predict_one_calls_are_coalesced_into_batches():
    fake = FakePredictor(guess=300)
    front = BatchingPredictor(fake, max_batch=16, max_delay_s=0.05)
    results: dict[int, float | None] = {}
    barrier = threading.Barrier(12)

    def call(i: int) -> None:
        barrier.wait()
        results[i] = front.predict_one(PredictionInput("p", "o", num_generated=10 * i))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    front.close()
    assert results == {i: 300.0 - 10 * i for i in range(12)}
    assert sum(fake.batch_sizes) == 12 and len(fake.batch_sizes) < 12
    assert front.failures == 0 and front.num_predictions == 12


def test_a_batch_never_exceeds_max_batch():
    fake = FakePredictor()
    front = BatchingPredictor(fake, max_batch=4, max_delay_s=0.05)
    threads = [threading.Thread(target=front.predict_one, args=(PredictionInput("p"),)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    front.close()
    assert max(fake.batch_sizes) <= 4 and sum(fake.batch_sizes) == 10


def test_a_failing_predictor_answers_none_and_counts_the_failures():
    fake = FakePredictor(fail=True)
    front = BatchingPredictor(fake, max_delay_s=0.0)
    assert front.predict_one(PredictionInput("p")) is None
    assert front.predict_one(PredictionInput("q")) is None
    assert front.failures == 2
    fake.fail = False
    assert front.predict_one(PredictionInput("p")) == 200.0
    assert front.failures == 2
    front.close()


def test_a_hanging_predictor_times_out_to_none():
    class Slow(FakePredictor):
        def predict(self, items):
            time.sleep(0.5)
            return super().predict(items)

    front = BatchingPredictor(Slow(), timeout_s=0.05)
    assert front.predict_one(PredictionInput("p")) is None
    assert front.failures == 1
    front.close()


def test_a_head_with_an_embedding_projection_round_trips(tmp_path: Path):
    torch.manual_seed(0)
    head = LengthHead(13, hidden=16, num_layers=2, embedding_dim=10, projection_dim=3)
    head.set_normalization(torch.randn(40, 13))
    head.eval()
    x = torch.randn(5, 13)
    meta = _metadata(13)
    meta["head"].update({"hidden": 16, "num_layers": 2, "embedding_dim": 10, "projection_dim": 3})
    loaded = load_checkpoint(save_checkpoint(tmp_path / "p.pt", head, meta, half=False))
    assert head.mlp_input_dim == 3 + 3
    assert torch.equal(head(x), loaded.head(x))
    # The projection is the embedding's top principal directions: orthonormal columns.
    gram = loaded.head.projection.T @ loaded.head.projection
    assert torch.allclose(gram, torch.eye(3), atol=1e-4)


def test_the_prior_fingerprint_follows_the_prior_not_the_checkpoints_version():
    """Workers reuse the admission's prior score only when their prior is the API's: an update (new version, same
    prior) keeps the fingerprint, a retrained prior changes it, a checkpoint without a prior has none."""
    from elis.predictor.checkpoint import Checkpoint
    from elis.predictor.serving import prior_fingerprint

    tensors = {"head.0.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "head.0.bias": torch.zeros(2)}
    meta = {"kind": "ranker", "version": 1, "prompt_prior": {"backbone": "served-model", "hidden": 2}}
    first = prior_fingerprint(Checkpoint(head=None, metadata=meta, prompt_prior=tensors))
    updated = prior_fingerprint(Checkpoint(head=None, metadata={**meta, "version": 2},
                                           prompt_prior={k: v.clone() for k, v in tensors.items()}))
    retrained = prior_fingerprint(Checkpoint(head=None, metadata=meta,
                                             prompt_prior={**tensors, "head.0.bias": torch.ones(2)}))
    assert first is not None and len(first) == 16
    assert updated == first != retrained
    assert prior_fingerprint(Checkpoint(head=None, metadata={"kind": "ranker"}, prompt_prior=None)) is None
