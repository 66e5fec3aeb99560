"""The regression head: the ELIS paper's MLP (8 fully connected layers, 1024 wide, ReLU) on the CLS embedding.

Inputs are standardized with the training set's mean and standard deviation (buffers saved with the
weights). The head predicts the remaining tokens in a transformed space (`TargetTransform`); `predict_tokens`
maps back to tokens, clamped at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

HIDDEN = 1024
NUM_HIDDEN_LAYERS = 8


@dataclass(frozen=True)
class TargetTransform:
    """How remaining tokens become the regression target: `log1p` or `raw` (tokens / `scale`)."""

    name: str = "log1p"
    scale: float = 100.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.name == "log1p":
            return torch.log1p(tokens.clamp_min(0))
        if self.name == "raw":
            return tokens / self.scale
        raise ValueError(f"unknown target transform {self.name!r}")

    def inverse(self, target: torch.Tensor) -> torch.Tensor:
        if self.name == "log1p":
            return torch.expm1(target.clamp(max=math.log1p(1e6))).clamp_min(0)
        if self.name == "raw":
            return (target * self.scale).clamp_min(0)
        raise ValueError(f"unknown target transform {self.name!r}")


class LengthHead(nn.Module):
    """`num_layers` Linear+ReLU layers of width `hidden`, then a linear output (one number)."""

    def __init__(
        self,
        input_dim: int,
        hidden: int = HIDDEN,
        num_layers: int = NUM_HIDDEN_LAYERS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("std", torch.ones(input_dim))
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def set_normalization(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
