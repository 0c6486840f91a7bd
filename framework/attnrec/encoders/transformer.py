from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ..interfaces import Attention, Batch, ItemEncoder, UserEncoder, UserEncoding

AttentionFactory = Callable[[int], Attention]
"""Builds one attention module for a given width; a class such as ``MultiHeadAttention`` or a
``functools.partial`` of one (in YAML: ``class_path`` + ``init_args`` without ``dim``)."""


class _Block(nn.Module):
    """Pre-LayerNorm transformer block (stabler than post-LN for small recommendation models)."""

    def __init__(self, dim: int, attention: Attention, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attention = attention
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        h = self.attn_norm(x)
        attended, weights = self.attention(h, h, h, mask=mask, need_weights=need_weights)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights


class TransformerUserEncoder(UserEncoder):
    """Self-attentive sequence encoder (SASRec's user model; BERT4Rec's with ``causal=False``).

    Learned positions count back from the most recent item, so the last history item always
    has the same position embedding whatever the history length. Every query may attend to
    itself, so no row is ever fully masked under left padding.
    """

    all_positions = True

    def __init__(
        self,
        dim: int,
        num_layers: int = 2,
        max_len: int = 50,
        dropout: float = 0.2,
        ffn_dim: int = 0,
        causal: bool = True,
        attention: AttentionFactory = MultiHeadAttention,
    ) -> None:
        super().__init__(dim)
        self.max_len = max_len
        self.causal = causal
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _Block(dim, attention(dim), ffn_dim or 4 * dim, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        history = batch["history"]
        b, length = history.shape
        if length > self.max_len:
            raise ValueError(
                f"TransformerUserEncoder: history length {length} exceeds max_len={self.max_len}; "
                "set the data module's max_len to at most the encoder's max_len"
            )
        present = history != 0
        positions = torch.arange(self.max_len - length, self.max_len, device=history.device)
        x = item_encoder(history) + self.positions(positions)
        x = self.input_dropout(x) * present.unsqueeze(-1)
        mask = present[:, None, None, :].expand(b, 1, length, length)
        if self.causal:
            mask = mask & torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        mask = mask | torch.eye(length, dtype=torch.bool, device=history.device)
        weights: dict[str, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, w = block(x, mask, need_weights)
            if w is not None:
                weights[f"layer{i}"] = w
        x = self.final_norm(x)
        vectors = x if all_positions else x[:, -1]
        return UserEncoding(vectors, weights if need_weights else None)
