"""The served model's hidden states as admission features: shape, scale, padding, and the worker's template."""

from __future__ import annotations

import numpy as np
import pytest

from elis.config import Settings

# The tests that read states are slow: they load the real SmolLM2-135M-Instruct with transformers.


@pytest.fixture(scope="module")
def states():
    from elis.models_prepare import prepare_default_model
    from elis.predictor.llm_states import load_served_model_states

    return load_served_model_states(prepare_default_model(Settings().models_dir), layers=(10, 30))


@pytest.mark.slow
def test_each_layer_gives_a_unit_last_token_block_and_a_unit_mean_block(states):
    rows = states.encode(["Name a river.", "Write a long essay on the history of the Roman empire."])
    hidden = states.model.config.hidden_size
    assert rows.shape == (2, 4 * hidden) and states.dim == 4 * hidden
    norms = np.linalg.norm(rows.reshape(2, 4, hidden), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    assert not np.allclose(rows[0], rows[1])


@pytest.mark.slow
def test_a_prompts_features_do_not_depend_on_the_batch_it_is_padded_in(states):
    short = "Name a river."
    alone = states.encode([short])[0]
    beside_a_long_prompt = states.encode([short, "Explain, step by step and with three examples, " * 8])[0]
    np.testing.assert_allclose(alone, beside_a_long_prompt, atol=2e-4)


@pytest.mark.slow
def test_the_prompt_is_templated_as_the_worker_sends_it_to_vllm(states):
    text = states.templated("Name a river.")
    assert text == states.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a river."}], add_generation_prompt=True, tokenize=False)
    assert text.rstrip().endswith("assistant") and "Name a river." in text


@pytest.mark.parametrize("args, message", [
    (["--encoder", "gpt"], "--encoder is 'minilm' or 'served-model'"),
    (["--encoder", "served-model", "--layers", "2"], "frozen only"),
])
def test_the_study_refuses_an_unknown_encoder_or_tuning_the_served_model(args, message):
    from typer.testing import CliRunner

    from elis.cli import app

    result = CliRunner().invoke(app, ["predictor", "finetune-encoder", "--held-out", "gsm8k", *args])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.slow
def test_a_worker_given_the_admission_scores_never_loads_the_served_model():
    """The shipped predictor reads the served model lazily: a predictor fed each job's admission prior score (as
    the worker is) re-predicts without loading it, and loads it at the first prompt that carries none; its
    scores are then the API's."""
    from elis.predictor.checkpoint import load_checkpoint
    from elis.predictor.encoder import load_encoder
    from elis.predictor.features import PredictionInput
    from elis.predictor.llm_states import LazyServedModelStates
    from elis.predictor.serving import LengthPredictor, default_checkpoint_path

    checkpoint = load_checkpoint(default_checkpoint_path())
    encoder = load_encoder(checkpoint.metadata["encoder"])
    api, worker = LengthPredictor(encoder, checkpoint), LengthPredictor(encoder, checkpoint)
    lazy = worker._prior.states
    assert isinstance(lazy, LazyServedModelStates) and not lazy.loaded
    prompts = ["Explain photosynthesis in detail.", "Say hi."]
    api.predict([PredictionInput(p, max_tokens=512) for p in prompts])
    carried = [api.prior_score(p) for p in prompts]
    later = [PredictionInput(p, "Plants use light and ", 50, max_tokens=512) for p in prompts]
    with_scores = [PredictionInput(i.prompt, i.output_text, i.num_generated, i.max_tokens, prior_score=score,
                                   prior_fingerprint=fingerprint) for i, (score, fingerprint) in zip(later, carried)]
    assert worker.predict(with_scores[:1]) == pytest.approx(api.predict(later[:1]))
    assert not lazy.loaded and worker.carried_priors == 1
    assert worker.predict(later[1:]) == pytest.approx(api.predict(later[1:]))  # no score carried: computed here
    assert lazy.loaded and worker.carried_priors == 1


def test_a_lazy_reader_that_failed_to_load_fails_at_once_afterwards(monkeypatch):
    """A model that cannot load is tried once: later predictions fail fast (the admission falls back to FCFS
    order, the worker keeps the job's last prediction) instead of each waiting for another 540 MB load."""
    from elis.predictor import llm_states

    calls = []

    def broken(layers=(), memo=False):
        calls.append(layers)
        raise OSError("model.safetensors is truncated")

    monkeypatch.setattr(llm_states, "shared_served_model_states", broken)
    lazy = llm_states.LazyServedModelStates((15, 22, 30), hidden_size=576)
    assert lazy.dim == 2 * 3 * 576 and not lazy.loaded
    with pytest.raises(OSError):
        lazy.encode(["a prompt"])
    with pytest.raises(RuntimeError, match="did not load for the prompt prior: OSError: model.safetensors"):
        lazy.encode(["another prompt"])
    assert calls == [(15, 22, 30)] and not lazy.loaded


def test_readers_asked_for_at_once_share_one_load(monkeypatch):
    """Two predictors (a hot reload's and the old one, or two Celery threads) asking for the same reader at once
    load the model once, not twice."""
    import threading
    import time

    from elis.predictor import llm_states

    loads = []

    def slow_load(layers=(), memo=False):
        loads.append(layers)
        time.sleep(0.2)  # long enough for the second caller to arrive while the first loads
        return object()

    monkeypatch.setattr(llm_states, "load_served_model_states", slow_load)
    monkeypatch.setattr(llm_states, "_SHARED", {})
    readers = []
    callers = [threading.Thread(target=lambda: readers.append(llm_states.shared_served_model_states((7, 9))))
               for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert loads == [(7, 9)] and len(readers) == 2 and readers[0] is readers[1]
