from __future__ import annotations

import torch
from torch import Tensor, nn

from ..interfaces import Attention


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

    def logits(self, query: Tensor, key: Tensor) -> Tensor:
        # [B, Lq, 1, H] + [B, 1, Lk, H] -> [B, 1, Lq, Lk]
        hidden = torch.tanh(self.key_proj(key).unsqueeze(1) + self.query_proj(query).unsqueeze(2))
        return self.score(hidden).squeeze(-1).unsqueeze(1)
