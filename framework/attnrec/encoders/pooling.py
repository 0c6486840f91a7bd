from __future__ import annotations

from torch import nn

from ..attention import AdditiveAttention
from ..interfaces import Batch, ItemEncoder, UserEncoder, UserEncoding
from .transformer import AttentionFactory


class PoolingUserEncoder(UserEncoder):
    """Order-free user model: attention pooling of the history's item vectors.

    The attention gets an all-zero query, so with ``AdditiveAttention`` this is the learned
    query pooling of NRMS's user encoder without the self-attention layer.
    """

    def __init__(self, dim: int, attention: AttentionFactory = AdditiveAttention, dropout: float = 0.0) -> None:
        super().__init__(dim)
        self.attention = attention(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        history = batch["history"]
        items = self.dropout(item_encoder(history))
        query = items.new_zeros(items.shape[0], 1, items.shape[-1])
        mask = (history != 0)[:, None, None, :]
        pooled, weights = self.attention(query, items, items, mask=mask, need_weights=need_weights)
        return UserEncoding(pooled[:, 0], {"pooling": weights} if need_weights else None)
