"""The ranking metrics against torchmetrics.retrieval (an independent implementation) and hand cases.

torchmetrics averages per query (one query = one ranked list) exactly as the evaluator does;
``RetrievalPrecision`` divides by ``top_k`` (``adaptive_k=False``), as ours does; its MRR
ignores relevant items with a non-positive score, so scores here are kept positive.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torchmetrics import retrieval as tmr

from attnrec.evaluation import DenseScoring, RankingEvaluator, rank_candidates, rank_full
from attnrec.metrics import AUC, HR, MRR, NDCG, Precision, Recall

K = 5
METRICS = [HR(), Recall(), Precision(), NDCG(), MRR(), AUC()]


def reference(preds: list[Tensor], relevant: list[Tensor], k: int) -> dict[str, float]:
    """torchmetrics' figures over per-list (scores, 0/1 relevance) of the valid candidates."""
    indexes = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(preds)])
    flat_preds, flat_target = torch.cat(preds).double(), torch.cat(relevant).bool()
    metrics = {
        f"HR@{k}": tmr.RetrievalHitRate(top_k=k),
        f"Recall@{k}": tmr.RetrievalRecall(top_k=k),
        f"Precision@{k}": tmr.RetrievalPrecision(top_k=k),
        f"NDCG@{k}": tmr.RetrievalNormalizedDCG(top_k=k),
        f"MRR@{k}": tmr.RetrievalMRR(top_k=k),
        "AUC": tmr.RetrievalAUROC(),
    }
    return {name: float(m(flat_preds, flat_target, indexes=indexes)) for name, m in metrics.items()}


def ours(evaluator: RankingEvaluator) -> dict[str, float]:
    return {name: float(value) for name, value in evaluator.compute().items()}


@pytest.mark.parametrize("max_relevant", [1, 4])
def test_full_ranking_matches_torchmetrics(max_relevant: int) -> None:
    gen = torch.Generator().manual_seed(max_relevant)
    b, n = 40, 60
    scores = torch.rand(b, n + 1, generator=gen) + 0.5  # continuous: no ties
    targets = torch.zeros(b, max_relevant, dtype=torch.long)
    seen = torch.zeros(b, 8, dtype=torch.long)
    preds, relevant = [], []
    for u in range(b):
        perm = torch.randperm(n, generator=gen) + 1
        t = int(torch.randint(1, max_relevant + 1, (1,), generator=gen))
        s = int(torch.randint(0, 9, (1,), generator=gen))
        targets[u, :t] = perm[:t]
        seen[u, :s] = perm[t : t + s]
        valid = perm[torch.isin(perm, seen[u, :s], invert=True)]
        preds.append(scores[u, valid])
        relevant.append(torch.isin(valid, targets[u, :t]))
    evaluator = RankingEvaluator(METRICS, [K], n)
    # uneven chunks, so the chunk walk is part of what is checked
    evaluator.update(rank_full(DenseScoring(scores), n + 1, targets, seen, K, chunk_size=7 * max_relevant))
    expected = reference(preds, relevant, K)
    got = ours(evaluator)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("max_relevant", [1, 3])
def test_candidate_ranking_matches_torchmetrics(max_relevant: int) -> None:
    gen = torch.Generator().manual_seed(10 + max_relevant)
    b, c = 50, 12
    candidates = torch.zeros(b, c, dtype=torch.long)
    labels = torch.zeros(b, c, dtype=torch.long)
    scores = torch.rand(b, c, generator=gen) + 0.5
    preds, relevant = [], []
    for u in range(b):
        length = int(torch.randint(max_relevant + 2, c + 1, (1,), generator=gen))  # 0-padded lists
        candidates[u, :length] = torch.randperm(100, generator=gen)[:length] + 1
        t = int(torch.randint(1, max_relevant + 1, (1,), generator=gen))
        where = torch.randperm(length, generator=gen)[:t]
        labels[u, where] = 1
        preds.append(scores[u, :length])
        relevant.append(labels[u, :length])
    scores[candidates == 0] = 99.0  # padding must not count, whatever its score
    evaluator = RankingEvaluator(METRICS, [K], 100)
    evaluator.update(rank_candidates(scores, candidates, labels, K))
    expected = reference(preds, relevant, K)
    got = ours(evaluator)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_hand_computed_values() -> None:
    inf = math.inf
    # list 1: one relevant item at rank 3 of 10; list 2: two relevant items at ranks 1 and 6 of 8
    ranks = torch.tensor([[3.0, inf], [1.0, 6.0]], dtype=torch.float64)
    num_relevant = torch.tensor([1, 2])
    num_candidates = torch.tensor([10, 8])
    k = 5
    assert HR()(ranks, num_relevant, num_candidates, k).tolist() == [1.0, 1.0]
    assert Recall()(ranks, num_relevant, num_candidates, k).tolist() == [1.0, 0.5]
    assert Precision()(ranks, num_relevant, num_candidates, k).tolist() == [0.2, 0.2]
    assert MRR()(ranks, num_relevant, num_candidates, k).tolist() == pytest.approx([1 / 3, 1.0])
    ndcg = NDCG()(ranks, num_relevant, num_candidates, k).tolist()
    assert ndcg == pytest.approx([1 / math.log2(4), 1.0 / (1.0 + 1 / math.log2(3))])
    # AUC: list 1 has 7 of 9 irrelevant items below it; list 2: item@1 beats all 6, item@6 beats 2
    assert AUC()(ranks, num_relevant, num_candidates, None).tolist() == pytest.approx([7 / 9, 8 / 12])
    # below the cut-off nothing counts
    assert MRR()(ranks, num_relevant, num_candidates, 2).tolist() == [0.0, 1.0]
    assert NDCG()(ranks, num_relevant, num_candidates, 2).tolist() == pytest.approx([0.0, 1.0 / (1.0 + 1 / math.log2(3))])


def test_auc_with_tied_relevant_items_stays_in_range() -> None:
    # two relevant items tied with everything (a constant scorer): no pair is ordered correctly
    scores = torch.zeros(1, 6)
    candidates = torch.arange(1, 7).unsqueeze(0)
    labels = torch.tensor([[1, 1, 0, 0, 0, 0]])
    ranking = rank_candidates(scores, candidates, labels, 3)
    assert ranking.ranks[0, :2].tolist() == [6.0, 6.0]
    assert AUC()(ranking.ranks, ranking.num_relevant, ranking.num_candidates, None).item() == 0.0
    # two relevant items tied with each other, above all irrelevant ones: every pair is correct
    scores = torch.tensor([[5.0, 5.0, 1.0, 2.0, 3.0, 0.5]])
    ranking = rank_candidates(scores, candidates, labels, 3)
    assert AUC()(ranking.ranks, ranking.num_relevant, ranking.num_candidates, None).item() == 1.0


def test_evaluator_averages_over_lists_and_skips_lists_without_targets() -> None:
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    candidates = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 0]])  # the third list has nothing to find
    evaluator = RankingEvaluator([HR(), MRR()], [1, 3], 3)
    evaluator.update(rank_candidates(scores, candidates, labels, 3))
    got = ours(evaluator)
    assert got == {"HR@1": 0.5, "HR@3": 1.0, "MRR@1": 0.5, "MRR@3": pytest.approx((1 + 1 / 3) / 2)}
    assert float(evaluator.lists) == 2.0
