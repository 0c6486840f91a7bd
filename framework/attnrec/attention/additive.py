from __future__ import annotations

import torch
from torch import Tensor, nn

from ..interfaces import Attention, AttentionOutput
from .multihead import attendable


class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention: ``w^T tanh(W k + U q + b)``, softmax over keys.

    With an all-zero query it is the learned-query attention pooling of NRMS/NAML.
    """

    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__(dim)
        hidden = hidden or dim
        self.key_proj = nn.Linear(dim, hidden)
        self.query_proj = nn.Linear(dim, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> AttentionOutput:
        # [B, Lq, 1, H] + [B, 1, Lk, H] -> [B, Lq, Lk]
        hidden = torch.tanh(self.key_proj(key).unsqueeze(1) + self.query_proj(query).unsqueeze(2))
        logits = self.score(hidden).squeeze(-1).unsqueeze(1)  # [B, 1, Lq, Lk]
        mask, empty = attendable(mask, tuple(logits.shape))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = logits.softmax(dim=-1)
        if empty is not None:
            weights = weights.masked_fill(empty, 0.0)
        out = weights.squeeze(1) @ value
        return AttentionOutput(out, weights if need_weights else None)
