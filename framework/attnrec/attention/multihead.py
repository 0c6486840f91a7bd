from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..interfaces import Attention, AttentionOutput, attendable_rows


class MultiHeadAttention(Attention):
    """Multi-head scaled dot-product attention on ``F.scaled_dot_product_attention``.

    The fused kernel is used unless weights are asked for (it cannot return them); then the
    base's explicit path runs the same computation, so the explanation matches the prediction.
    Subclasses add a logit bias (relative positions, recency, time gaps) by overriding
    :meth:`bias` alone: both paths apply it.
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

    def bias(self, lq: int, lk: int) -> Tensor | None:
        """An additive logit bias ``[H, Lq, Lk]`` (queries right-aligned with the keys), or None."""
        return None

    def logits(self, query: Tensor, key: Tensor) -> Tensor:
        q, k = self._heads(self.q_proj(query)), self._heads(self.k_proj(key))
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        bias = self.bias(q.shape[2], k.shape[2])
        return scores if bias is None else scores + bias.to(scores.dtype)

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
    ) -> AttentionOutput:
        if need_weights:
            return super().forward(query, key, value, mask, need_weights=True)
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self.values(value)
        b, h, lq, _ = q.shape
        lk = k.shape[2]
        opened, some = attendable_rows(mask, (b, h, lq, lk))
        attn_mask, bias = opened, self.bias(lq, lk)
        if bias is not None:  # a float mask: the bias, -inf where masked
            attn_mask = bias.to(q.dtype).expand(b, h, lq, lk)
            if opened is not None:
                attn_mask = attn_mask.masked_fill(~opened, float("-inf"))
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        if some is None:
            return AttentionOutput(self.output(attended), None)
        # a head whose row was opened up contributes nothing, as its zero weights say; a row no
        # head may attend from is zero after the projection's bias too
        out = self.output(attended * some) * some.any(dim=1)
        return AttentionOutput(out, None)
