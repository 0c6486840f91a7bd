"""Per-list ranking metrics (registered through ``register_metrics`` like any plugin's).

Each takes tie-pessimistic 1-based ranks of the relevant items (``inf`` = padding) and returns
one value per list; the evaluator averages them with exact sums across processes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .interfaces import RankingMetric


def _hits(ranks: Tensor, k: int | None) -> Tensor:
    assert k is not None
    return (ranks <= k).to(torch.float64)


class HR(RankingMetric):
    """Hit ratio@K: 1 if any relevant item is in the top K."""

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        return _hits(ranks, k).amax(dim=1)


class Recall(RankingMetric):
    """Relevant items in the top K over all relevant items (LightGCN's and RecBole's definition)."""

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        return _hits(ranks, k).sum(dim=1) / num_relevant.clamp(min=1)


class Precision(RankingMetric):
    """Relevant items in the top K over K."""

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        assert k is not None
        return _hits(ranks, k).sum(dim=1) / k


class NDCG(RankingMetric):
    """Binary-relevance NDCG@K; the ideal list puts min(#relevant, K) hits first."""

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        assert k is not None
        ranks = ranks.to(torch.float64)
        gains = torch.where(ranks <= k, 1.0 / torch.log2(ranks.clamp(max=k) + 1.0), torch.zeros_like(ranks))
        discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=ranks.device))
        ideal_len = num_relevant.clamp(min=1, max=k)
        ideal = torch.cumsum(discounts, 0)[ideal_len - 1]
        return gains.sum(dim=1) / ideal


class MRR(RankingMetric):
    """Reciprocal rank of the first relevant item, 0 if it is below K (RecBole's MRR@K)."""

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        assert k is not None
        first = ranks.to(torch.float64).amin(dim=1)
        return torch.where(first <= k, 1.0 / first, torch.zeros_like(first))


class AUC(RankingMetric):
    """Share of (relevant, irrelevant) pairs ordered correctly within the list; ties count as
    errors (tie-pessimistic, so a constant scorer gets 0, not 0.5)."""

    uses_k = False

    def __call__(self, ranks: Tensor, num_relevant: Tensor, num_candidates: Tensor, k: int | None) -> Tensor:
        ranks = ranks.to(torch.float64)
        p = num_relevant.to(torch.float64)
        n = num_candidates.to(torch.float64)
        finite = torch.isfinite(ranks)
        below = torch.where(finite, n.unsqueeze(1) - ranks, torch.zeros_like(ranks)).sum(dim=1)
        # `below` also counts relevant items strictly below a relevant one; pessimistic ranks are
        # equal exactly when scores tie, so those are the pairs of finite, different ranks
        # (p(p-1)/2 only when no two relevant items tie)
        strictly = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & finite.unsqueeze(2) & finite.unsqueeze(1)
        correct = below - strictly.sum(dim=(1, 2)).to(torch.float64)
        pairs = p * (n - p)
        return torch.where(pairs > 0, correct / pairs.clamp(min=1), torch.zeros_like(pairs))


BUILTIN_METRICS = (HR, Recall, Precision, NDCG, MRR, AUC)


LEGEND = {
    "HR": "HR@k = a held-out item in the top k (equals Recall@k when a list holds one)",
    "NDCG": "NDCG@k and MRR@k discount hits by rank",
    "MRR": "NDCG@k and MRR@k discount hits by rank",
    "AUC": "AUC = share of (held-out, other) pairs ordered right",
    "GAUC": "GAUC = AUC averaged per user (equals AUC with one list per user)",
    "Coverage": "Coverage@k = share of the catalogue recommended at all",
    "Novelty": "Novelty@k = mean -log2 popularity share of recommended items, in bits",
    "Gini": "Gini@k = 0 when recommendations spread evenly, 1 when all go to one item",
}


def metric_legend(results: dict[str, float]) -> str:
    """One line explaining the metric names in ``results`` (metrics without an entry in
    :data:`LEGEND`, such as a plugin's own, are left to their docstrings)."""
    lines: list[str] = []
    for name in results:
        line = LEGEND.get(name.split("@")[0])
        if line is not None and line not in lines:
            lines.append(line)
    return "; ".join(lines)
