from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..interfaces import Attention, masked_softmax


class _PReLU(nn.Module):
    """PReLU with one slope per unit of the last dimension (``nn.PReLU`` uses dim 1)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.full((size,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.slope * x)


class TargetAttention(Attention):
    """DIN's activation unit: an MLP scores each behaviour against the target item.

    The score of key ``k`` for query ``q`` is ``MLP([k, q, k - q, k * q])``. DIN keeps the raw
    scores (``normalize="none"``) so the pooled vector's norm carries interest intensity;
    ``"softmax"`` gives a convex combination instead.
    """

    def __init__(
        self, dim: int, hidden: tuple[int, ...] = (80, 40), normalize: Literal["none", "softmax", "sigmoid"] = "none"
    ) -> None:
        super().__init__(dim)
        layers: list[nn.Module] = []
        width = 4 * dim
        for size in hidden:
            layers += [nn.Linear(width, size), _PReLU(size)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.normalization = normalize

    def logits(self, query: Tensor, key: Tensor) -> Tensor:
        b, lq, d = query.shape
        lk = key.shape[1]
        q = query.unsqueeze(2).expand(b, lq, lk, d)
        k = key.unsqueeze(1).expand(b, lq, lk, d)
        return self.mlp(torch.cat([k, q, k - q, k * q], dim=-1)).squeeze(-1).unsqueeze(1)  # [B, 1, Lq, Lk]

    def normalize(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        if self.normalization == "softmax":
            return masked_softmax(logits, mask)
        weights = torch.sigmoid(logits) if self.normalization == "sigmoid" else logits
        return weights if mask is None else weights * mask.to(torch.bool).expand(weights.shape)
