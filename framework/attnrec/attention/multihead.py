from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interfaces import Attention, AttentionOutput


def attendable(mask: Tensor | None, shape: tuple[int, int, int, int]) -> tuple[Tensor | None, Tensor | None]:
    """Make every query row attendable.

    Returns the mask expanded to ``shape`` with fully masked rows opened up (so fused kernels
    never see one and return NaN), and a ``[B, H, Lq, 1]`` flag of the rows that were empty,
    whose outputs the caller zeroes; ``(None, None)`` when there is no mask.
    """
    if mask is None:
        return None, None
    mask = mask.to(torch.bool).expand(shape)
    empty = ~mask.any(dim=-1, keepdim=True)
    if bool(empty.any()):
        mask = mask | empty
        return mask, empty
    return mask, None


class MultiHeadAttention(Attention):
    """Multi-head scaled dot-product attention on ``F.scaled_dot_product_attention``.

    The fused kernel is used unless weights are asked for (it cannot return them); then the
    same computation runs explicitly so the explanation matches the prediction.
    """

    def __init__(self, dim: int, num_heads: int = 2, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__(dim)
        if dim % num_heads:
            raise ValueError(f"MultiHeadAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> AttentionOutput:
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        b, h, lq, hd = q.shape
        mask, empty = attendable(mask, (b, h, lq, k.shape[2]))
        p = self.dropout if self.training else 0.0
        if need_weights:
            logits = (q @ k.transpose(-2, -1)) / hd**0.5
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(dim=-1)
            if empty is not None:
                weights = weights.masked_fill(empty, 0.0)
            out = F.dropout(weights, p=p, training=self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            if empty is not None:  # a head whose row was opened up contributes nothing, as its zero weights say
                out = out.masked_fill(empty, 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, self.dim))
        if empty is not None:  # rows with nothing to attend to in any head are zero after the projection too
            out = out.masked_fill(empty.all(dim=1), 0.0)
        return AttentionOutput(out, weights)
