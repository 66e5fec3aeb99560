"""A predictor checkpoint: the head's weights plus the metadata serving needs to rebuild its inputs.

One `torch.save` file holding `{"format": 1, "metadata": {...}, "state_dict": {...}}`, loadable with
`weights_only=True`. The metadata holds only JSON-able values: the encoder's name and context length, the
text join's prompt budget, whether the step feature is used, the window size, the head's shape, the target
transform, the calibrated priority-level edges, and the training dataset's SHA-256. Weights may be stored in
float16 (half the bytes); they are loaded back as float32.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from elis.predictor.head import LengthHead, TargetTransform

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """The file is not a usable predictor checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the head (eval mode, float32) and its metadata."""

    head: torch.nn.Module  # LengthHead, or RankerHead when metadata["kind"] == "ranker"
    metadata: dict[str, Any]
    # the prompt prior's tensors (prompt_prior.py) when metadata["prompt_prior"] describes one
    prompt_prior: dict[str, torch.Tensor] | None = None

    @property
    def kind(self) -> str:
        return self.metadata.get("kind", "elis")

    @property
    def transform(self) -> TargetTransform:
        spec = self.metadata["target_transform"]
        return TargetTransform(name=spec["name"], scale=float(spec.get("scale", 100.0)))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_head(metadata: dict[str, Any]) -> torch.nn.Module:
    """The head a checkpoint's metadata describes: the ELIS MLP (`LengthHead`) or a `RankerHead`."""
    if metadata.get("kind") == "ranker":
        from elis.predictor.ranker import build_ranker_head

        return build_ranker_head(metadata["head"])
    shape = metadata["head"]
    return LengthHead(
        input_dim=int(shape["input_dim"]),
        hidden=int(shape["hidden"]),
        num_layers=int(shape["num_layers"]),
        dropout=float(shape.get("dropout", 0.0)),
        embedding_dim=int(shape.get("embedding_dim", 0)),
        projection_dim=int(shape.get("projection_dim", 0)),
    )


def save_checkpoint(path: str | Path, head: torch.nn.Module, metadata: dict[str, Any], half: bool = True,
                    prompt_prior: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the checkpoint atomically (temp file, then rename); `half` stores float16 weights.

    `prompt_prior`: the prior's tensors (`PromptPrior.state()`), stored as given beside the head's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # NOTE: the normalization and projection buffers stay float32 (small, and precision-sensitive).
    buffers = {"mean", "std", "center", "projection", "centers", "projections"}
    state = {
        k: (
            v.detach().to(torch.float16)
            if half and k not in buffers and v.is_floating_point()
            else v.detach()
        ).clone()
        for k, v in head.state_dict().items()
    }
    # NOTE: plain JSON types only (numpy scalars would make the file unloadable with weights_only=True)
    metadata = json.loads(json.dumps(metadata, default=float))
    tmp = path.with_suffix(path.suffix + ".tmp")
    blob = {"format": FORMAT_VERSION, "metadata": metadata, "state_dict": state}
    if prompt_prior is not None:
        blob["prompt_prior"] = {k: v.detach().clone() for k, v in prompt_prior.items()}
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint saved by `save_checkpoint`; raises `CheckpointError` on anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no predictor checkpoint at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read predictor checkpoint {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a format-{FORMAT_VERSION} predictor checkpoint")
    metadata = blob["metadata"]
    head = build_head(metadata)
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    head.load_state_dict(state)
    head.eval()
    prior = blob.get("prompt_prior")
    if metadata.get("prompt_prior") and not prior:
        raise CheckpointError(f"{path} names a prompt prior but holds no prompt prior weights")
    return Checkpoint(head=head, metadata=metadata, prompt_prior=prior)
