"""NRMS (Wu et al., 2019) as a ready-made composition, with its attention made inspectable."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

from attnrec.interfaces import Batch, ItemCatalog
from attnrec.model import ItemEncoderFactory, Loss, Recommender, ScorerFactory, UserEncoderFactory
from attnrec.scorers import DotScorer

from .encoders import NRMSNewsEncoder, NRMSUserEncoder


class NRMS(Recommender):
    """NRMS: word-level then click-level multi-head self-attention with additive pooling, a
    dot scorer and a softmax over each click and ``npratio`` non-clicked news of its impression
    (``sampled_softmax`` over the data's ``negatives``). MIND's metrics by default.

    Swap ``item_encoder`` for :class:`~attnrec_news.encoders.PLMNewsEncoder` to read titles
    with a pretrained language model.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 128,
        item_encoder: ItemEncoderFactory = NRMSNewsEncoder,
        user_encoder: UserEncoderFactory = NRMSUserEncoder,
        scorer: ScorerFactory = DotScorer,
        loss: Loss = "sampled_softmax",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: Literal["cosine", "constant"] = "constant",
        metrics: Sequence[str] = ("AUC", "MINDMRR", "NDCG"),
        ks: Sequence[int] = (5, 10),
        item_chunk_size: int = 65536,
    ) -> None:
        super().__init__(
            catalog, dim, item_encoder, user_encoder, scorer, loss, lr, weight_decay, warmup_steps, schedule,
            metrics, ks, item_chunk_size,
        )  # fmt: skip

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """Attention behind a batch's scores: ``click [B, L]`` (user pooling over the history),
        ``self_attention [B, H, L, L]`` over the history, and, for an NRMS news encoder,
        ``history_words [B, L, T]`` and ``candidate_words [B, C, T]`` (pooling over title tokens)."""
        out = dict(self.attention_weights(batch))
        if isinstance(self.item_encoder, NRMSNewsEncoder):
            out["history_words"] = self.item_encoder.word_attention(batch["history"])
            if "candidates" in batch:
                out["candidate_words"] = self.item_encoder.word_attention(batch["candidates"])
        return out
