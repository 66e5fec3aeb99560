"""The regression head: the ELIS paper's MLP (8 fully connected layers, 1024 wide, ReLU) on the CLS embedding.

Optionally (`projection_dim` > 0) the embedding is first projected onto its top principal components on
the training set (a fixed, saved linear map; the scalar features after the embedding pass through). With
about 3,000 training examples the full 384-dim input let the 7.7M-parameter MLP overfit within one or two
epochs; 8 components did better on validation (docs/predictor.md). Then inputs are standardized with the
training set's mean and standard deviation (buffers saved with the weights). The head predicts the remaining tokens in a transformed space (`TargetTransform`); `predict_tokens`
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
        embedding_dim: int = 0,
        projection_dim: int = 0,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.embedding_dim = embedding_dim
        self.projection_dim = projection_dim if embedding_dim else 0
        width = input_dim
        if self.projection_dim:
            self.register_buffer("center", torch.zeros(embedding_dim))
            self.register_buffer("projection", torch.zeros(embedding_dim, self.projection_dim))
            width = input_dim - embedding_dim + self.projection_dim
        self.mlp_input_dim = width
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def set_normalization(self, features: torch.Tensor) -> None:
        """Fit the projection (if any) and the standardization on the training inputs."""
        if self.projection_dim:
            embeddings = features[:, : self.embedding_dim].double()
            center = embeddings.mean(dim=0)
            _, _, vh = torch.linalg.svd(embeddings - center, full_matrices=False)
            self.center.copy_(center.float())
            self.projection.copy_(vh[: self.projection_dim].T.float())
        projected = self.project(features)
        self.mean.copy_(projected.mean(dim=0))
        self.std.copy_(projected.std(dim=0).clamp_min(1e-6))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        if not self.projection_dim:
            return features
        embeddings = features[:, : self.embedding_dim]
        reduced = (embeddings - self.center) @ self.projection
        return torch.cat([reduced, features[:, self.embedding_dim :]], dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((self.project(features) - self.mean) / self.std).squeeze(-1)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
