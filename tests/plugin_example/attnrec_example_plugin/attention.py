from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attnrec


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's geometric head slopes ``2^(-8 h / H)``: heads range from strongly local to
    nearly position-blind, so one layer mixes short- and long-range interests."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)])


class ALiBiAttention(attnrec.Attention):
    """Multi-head attention with ALiBi's linear recency bias (Press et al., ICLR 2022).

    Head ``h`` subtracts ``slope_h * |i - j|`` from the logit of query position ``i`` for key
    position ``j``: recent behaviour counts more, a prior that suits next-item prediction and
    needs no position table. Queries are right-aligned with the keys, so a single query
    (e.g. "the user now") sits at the last key position. Mask contract as in attnrec: boolean,
    broadcastable to ``[B, H, Lq, Lk]``, True = may attend; a query row with nothing to attend
    to returns zeros and zero weights instead of NaN.
    """

    def __init__(self, dim: int, num_heads: int = 2, dropout: float = 0.0, learn_slopes: bool = False) -> None:
        super().__init__(dim)
        if dim % num_heads:
            raise ValueError(f"ALiBiAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        slopes = alibi_slopes(num_heads)
        if learn_slopes:  # learned in log space so slopes stay positive (a recency bias, never a primacy one)
            self.log_slopes = nn.Parameter(slopes.log())
        else:
            self.register_buffer("log_slopes", slopes.log())
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def bias(self, lq: int, lk: int) -> Tensor:
        """The additive ``[H, Lq, Lk]`` recency bias."""
        device = self.log_slopes.device
        query_pos = torch.arange(lk - lq, lk, device=device)
        distance = (query_pos[:, None] - torch.arange(lk, device=device)[None, :]).abs()
        return -self.log_slopes.exp()[:, None, None] * distance

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> attnrec.AttentionOutput:
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        b, h, lq, hd = q.shape
        lk = k.shape[2]
        bias = self.bias(lq, lk).to(q.dtype).expand(b, h, lq, lk)
        empty = None
        if mask is not None:
            mask = mask.to(torch.bool).expand(b, h, lq, lk)
            empty = ~mask.any(dim=-1, keepdim=True)  # rows with nothing to attend to
            bias = bias.masked_fill(~(mask | empty), float("-inf"))  # opened up, zeroed below
        p = self.dropout if self.training else 0.0
        if need_weights:
            weights = ((q @ k.transpose(-2, -1)) / math.sqrt(hd) + bias).softmax(dim=-1)
            if empty is not None:
                weights = weights.masked_fill(empty, 0.0)
            out = F.dropout(weights, p=p, training=self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, self.dim))
        if empty is not None:  # a row no head may attend from stays zero after the projection's bias too
            out = out.masked_fill(empty.all(dim=1), 0.0)
        return attnrec.AttentionOutput(out, weights)
