"""SASRec (Kang & McAuley, ICDM 2018) as a ready-made Recommender."""

from __future__ import annotations

import functools
from typing import Any

from attnrec import ItemCatalog, Recommender
from attnrec.attention import MultiHeadAttention
from attnrec.encoders import IdItemEncoder, TransformerUserEncoder
from attnrec.model import BUILT_COMPONENTS
from attnrec.scorers import DotScorer


class SASRec(Recommender):
    """Self-attentive sequential recommendation, built from the core's parts.

    As in the paper: one item embedding table is both the input and the output layer
    (``r = F_t · M_i``); learned absolute positions (counted back from the latest item, which is
    what the paper's left-padded positions amount to); causal multi-head self-attention blocks
    ``x + Dropout(g(LayerNorm(x)))`` (the paper's own pre-LN formula), a point-wise feed-forward
    of width ``dim`` (``ffn_dim=0``); dropout on the embeddings and both residual branches; a
    final LayerNorm; every position is trained at once. ``max_len`` comes from the data.

    ``loss=BCELoss`` is the paper's objective (target vs one sampled negative per position: set
    the data module's ``num_negatives: 1``); the default ``CrossEntropyLoss`` is the full softmax
    that later work found stronger, ``GBCELoss`` the calibrated BCE of gSASRec. The other
    arguments are :class:`~attnrec.Recommender`'s. Deviations, kept because the core encoder is
    shared: the feed-forward uses GELU instead of ReLU, and the embeddings are not scaled by
    ``sqrt(dim)`` (the official code does this; the paper does not).
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        attention_dropout: float = 0.0,
        ffn_dim: int = 0,
        dim: int = 64,
        **kwargs: Any,
    ) -> None:
        attention = functools.partial(MultiHeadAttention, num_heads=num_heads, dropout=attention_dropout)
        user_encoder = functools.partial(
            TransformerUserEncoder, num_layers=num_layers, dropout=dropout, ffn_dim=ffn_dim or dim, causal=True,
            attention=attention,
        )  # fmt: skip
        super().__init__(catalog, dim, item_encoder=IdItemEncoder, user_encoder=user_encoder, scorer=DotScorer, **kwargs)
        # Record SASRec's own arguments (not the factories built from them), so a checkpoint
        # rebuilds SASRec(**hparams).
        self.save_hyperparameters(ignore=["catalog", *BUILT_COMPONENTS])
