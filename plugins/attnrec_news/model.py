"""NRMS (Wu et al., 2019) as a ready-made composition, with its attention made inspectable."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from attnrec.interfaces import Batch, ItemCatalog
from attnrec.losses import SampledSoftmaxLoss
from attnrec.model import ItemEncoderFactory, LossFactory, Recommender, UserEncoderFactory

from .encoders import NRMSNewsEncoder, NRMSUserEncoder


class NRMS(Recommender):
    """NRMS: word-level then click-level multi-head self-attention with additive pooling, a
    dot scorer and a softmax over each click and ``npratio`` non-clicked news of its impression
    (``SampledSoftmaxLoss`` over the data's ``negatives``). MIND's metrics by default; the
    other arguments are :class:`~attnrec.Recommender`'s.

    Swap ``item_encoder`` for :class:`~attnrec_news.encoders.PLMNewsEncoder` to read titles
    with a pretrained language model.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 128,
        item_encoder: ItemEncoderFactory = NRMSNewsEncoder,
        user_encoder: UserEncoderFactory = NRMSUserEncoder,
        loss: LossFactory | str = SampledSoftmaxLoss,
        schedule: Literal["cosine", "constant"] = "constant",
        metrics: Sequence[str] = ("AUC", "MINDMRR", "NDCG"),
        ks: Sequence[int] = (5, 10),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog, dim=dim, item_encoder=item_encoder, user_encoder=user_encoder, loss=loss, schedule=schedule,
            metrics=metrics, ks=ks, **kwargs,
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
