from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interfaces import Scorer


def _dot(users: Tensor, items: Tensor) -> Tensor:
    if items.dim() == 2:  # shared catalogue [N, D]
        return users @ items.T
    return (users.unsqueeze(-2) * items).sum(-1)  # per-row candidates [..., C, D]


class DotScorer(Scorer):
    """Inner product: the scorer of SASRec, NRMS and two-tower retrieval."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__(dim)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return _dot(users, items)


class CosineScorer(Scorer):
    """Cosine similarity divided by a temperature (a small temperature sharpens the softmax)."""

    def __init__(self, dim: int | None = None, temperature: float = 0.1) -> None:
        super().__init__(dim)
        self.temperature = temperature

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return _dot(F.normalize(users, dim=-1), F.normalize(items, dim=-1)) / self.temperature


class BilinearScorer(Scorer):
    """``u^T W i``: lets user and item spaces differ (the graph self-attention seed's score)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.weight = nn.Parameter(torch.eye(dim))

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return _dot(users @ self.weight, items)


class MLPScorer(Scorer):
    """An MLP on ``[u, i, u * i]``. Costs ``O(B * N)`` MLP calls on a full catalogue: use it with
    candidate lists or sampled losses, or a small catalogue."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.0) -> None:
        super().__init__(dim)
        layers: list[nn.Module] = []
        width = 3 * dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        if items.dim() == 2:
            shape = users.shape[:-1] + items.shape[:1] + items.shape[-1:]
            items = items.expand(shape)
        u = users.unsqueeze(-2).expand_as(items)
        return self.mlp(torch.cat([u, items, u * items], dim=-1)).squeeze(-1)
