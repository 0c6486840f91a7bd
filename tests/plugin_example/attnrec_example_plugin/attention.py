from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attnrec
from attnrec.attention import attendable_rows


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's geometric head slopes ``2^(-8 h / H)``: heads range from strongly local to
    nearly position-blind, so one layer mixes short- and long-range interests."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)])


class ALiBiAttention(attnrec.Attention):
    """Multi-head attention with ALiBi's linear recency bias (Press et al., ICLR 2022).

    Head ``h`` subtracts ``slope_h * |i - j|`` from the logit of query position ``i`` for key
    position ``j``: recent behaviour counts more, a prior that suits next-item prediction and
    needs no position table. Queries are right-aligned with the keys, so a single query
    (e.g. "the user now") sits at the last key position.

    Only the biased :meth:`logits` and the per-head :meth:`values`/:meth:`output` are ALiBi's:
    the attnrec base masks, normalises and zeroes query rows with nothing to attend to. Without
    ``need_weights`` :meth:`forward` runs the same computation in the fused
    ``F.scaled_dot_product_attention`` kernel, the bias passed as its float mask.
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

    def logits(self, query: Tensor, key: Tensor) -> Tensor:
        q, k = self._heads(self.q_proj(query)), self._heads(self.k_proj(key))
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        return scores + self.bias(q.shape[2], k.shape[2]).to(scores.dtype)

    def normalize(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        weights = super().normalize(logits, mask)
        return F.dropout(weights, p=self.dropout, training=self.training)

    def values(self, value: Tensor) -> Tensor:
        return self._heads(self.v_proj(value))

    def output(self, attended: Tensor) -> Tensor:
        b, _, lq, _ = attended.shape
        return self.out_proj(attended.transpose(1, 2).reshape(b, lq, self.dim))

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> attnrec.AttentionOutput:
        if need_weights:  # the fused kernel cannot return weights
            return super().forward(query, key, value, mask, need_weights=True)
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self.values(value)
        b, h, lq, _ = q.shape
        lk = k.shape[2]
        bias = self.bias(lq, lk).to(q.dtype).expand(b, h, lq, lk)
        opened, some = attendable_rows(mask, (b, h, lq, lk))
        if opened is not None:
            bias = bias.masked_fill(~opened, float("-inf"))
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        if some is None:
            return attnrec.AttentionOutput(self.output(attended), None)
        # an opened-up row contributes nothing, as its zero weights say; a row no head may
        # attend from stays zero after the projection's bias too
        return attnrec.AttentionOutput(self.output(attended * some) * some.any(dim=1), None)
