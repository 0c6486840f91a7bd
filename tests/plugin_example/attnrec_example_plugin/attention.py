from __future__ import annotations

import torch
from torch import Tensor, nn

from attnrec.attention import MultiHeadAttention


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's geometric head slopes ``2^(-8 h / H)``: heads range from strongly local to
    nearly position-blind, so one layer mixes short- and long-range interests."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)])


class ALiBiAttention(MultiHeadAttention):
    """Multi-head attention with ALiBi's linear recency bias (Press et al., ICLR 2022).

    Head ``h`` subtracts ``slope_h * |i - j|`` from the logit of query position ``i`` for key
    position ``j``: recent behaviour counts more, a prior that suits next-item prediction and
    needs no position table. Queries are right-aligned with the keys, so a single query
    (e.g. "the user now") sits at the last key position.

    Only the :meth:`bias` is ALiBi's: ``MultiHeadAttention`` adds it to its logits in the
    explicit path and passes it as the fused ``F.scaled_dot_product_attention`` kernel's float
    mask, and the attnrec base masks, normalises and zeroes query rows with nothing to attend to.
    """

    def __init__(self, dim: int, num_heads: int = 2, dropout: float = 0.0, learn_slopes: bool = False) -> None:
        super().__init__(dim, num_heads=num_heads, dropout=dropout)
        slopes = alibi_slopes(num_heads)
        if learn_slopes:  # learned in log space so slopes stay positive (a recency bias, never a primacy one)
            self.log_slopes = nn.Parameter(slopes.log())
        else:
            self.register_buffer("log_slopes", slopes.log())

    def bias(self, lq: int, lk: int) -> Tensor:
        """The additive ``[H, Lq, Lk]`` recency bias."""
        device = self.log_slopes.device
        query_pos = torch.arange(lk - lq, lk, device=device)
        distance = (query_pos[:, None] - torch.arange(lk, device=device)[None, :]).abs()
        return -self.log_slopes.exp()[:, None, None] * distance
