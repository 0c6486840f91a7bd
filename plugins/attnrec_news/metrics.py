"""Metrics of MIND's official scorer where attnrec's built-in ones differ.

MIND's ``evaluate.py`` scores each impression and averages over impressions:
``auc = roc_auc_score`` (equal to the built-in ``AUC`` when scores are distinct; attnrec counts
ties as errors, sklearn as halves), ``ndcg@k`` with gains ``2**label - 1`` over the top k by
score and the ideal from the labels sorted (for 0/1 labels exactly the built-in ``NDCG``), and
``mrr = sum(label_i / rank_i) / sum(label_i)`` over the *whole* impression. The last differs
from the built-in ``MRR`` (reciprocal rank of the first hit, cut at K), so it is registered
here as ``MINDMRR``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnrec.interfaces import RankingMetric


class MINDMRR(RankingMetric):
    """MIND's MRR: the mean reciprocal rank of every clicked news in the impression (no cut-off)."""

    uses_k = False

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        reciprocal = torch.where(torch.isfinite(ranks), 1.0 / ranks.to(torch.float64), torch.zeros_like(ranks, dtype=torch.float64))
        return reciprocal.sum(dim=1) / num_relevant.clamp(min=1).to(torch.float64)
