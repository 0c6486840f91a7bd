"""MIND's official scorer (per-impression AUC, MRR, nDCG@5/10 averaged over impressions)
against hand-computed values and against its own reference code and sklearn's AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnrec import get_component
from attnrec.evaluation import RankingEvaluator, rank_candidates


def mind_scores(scores: list[list[float]], labels: list[list[int]], ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    evaluator = RankingEvaluator([get_component("metrics", m)() for m in ("AUC", "MINDMRR", "NDCG")], ks, num_items=100)
    width = max(len(s) for s in scores)
    s = torch.full((len(scores), width), 0.0)
    cand = torch.zeros(len(scores), width, dtype=torch.long)
    lab = torch.zeros(len(scores), width, dtype=torch.long)
    for row, (sc, lb) in enumerate(zip(scores, labels)):
        s[row, : len(sc)] = torch.tensor(sc)
        cand[row, : len(sc)] = torch.arange(1, len(sc) + 1)
        lab[row, : len(lb)] = torch.tensor(lb)
    evaluator.update(rank_candidates(s, cand, lab, max(ks)))
    return {name: float(value) for name, value in evaluator.compute().items()}


# MIND's evaluate.py, verbatim in substance: the reference the plugin's metrics must match.
def ref_dcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    order = np.argsort(y_score)[::-1]
    gains = 2 ** np.take(y_true, order[:k]) - 1
    return float(np.sum(gains / np.log2(np.arange(len(gains)) + 2)))


def ref_ndcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    return ref_dcg(y_true, y_score, k) / ref_dcg(y_true, y_true, k)


def ref_mrr(y_true: np.ndarray, y_score: np.ndarray) -> float:
    y = np.take(y_true, np.argsort(y_score)[::-1])
    return float(np.sum(y / (np.arange(len(y)) + 1)) / np.sum(y_true))


def test_hand_computed_impressions() -> None:
    # impression 1: by score N0 N3* N2 N1* N4 -> clicks at ranks 2 and 4; impression 2: the click is last of 3
    out = mind_scores([[0.9, 0.2, 0.5, 0.7, 0.1], [0.3, 0.8, 0.6]], [[0, 1, 0, 1, 0], [1, 0, 0]])
    mrr = ((1 / 2 + 1 / 4) / 2 + 1 / 3) / 2
    ndcg1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    ndcg2 = 1 / math.log2(4)
    assert out["MINDMRR"] == pytest.approx(mrr)
    assert out["NDCG@5"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert out["NDCG@10"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert out["AUC"] == pytest.approx((3 / 6 + 0 / 2) / 2)  # 3 of 6 pairs right, then 0 of 2


def test_mind_mrr_differs_from_first_hit_mrr() -> None:
    """The built-in MRR@K takes the first hit only; MIND averages over every click."""
    out = mind_scores([[0.9, 0.8, 0.1]], [[1, 0, 1]])
    assert out["MINDMRR"] == pytest.approx((1 + 1 / 3) / 2)
    evaluator = RankingEvaluator([get_component("metrics", "MRR")()], [10], num_items=10)
    evaluator.update(rank_candidates(torch.tensor([[0.9, 0.8, 0.1]]), torch.tensor([[1, 2, 3]]), torch.tensor([[1, 0, 1]]), 10))
    assert float(evaluator.compute()["MRR@10"]) == pytest.approx(1.0)


def test_random_impressions_match_reference_and_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores, labels = [], []
    for _ in range(60):
        n = int(rng.integers(2, 25))
        lab = (rng.random(n) < 0.3).astype(int)
        lab[rng.integers(n)] = 1
        if lab.all():
            lab[0] = 0
        scores.append(rng.random(n).tolist())  # distinct scores: no ties
        labels.append(lab.tolist())
    out = mind_scores(scores, labels)
    s = [np.asarray(x) for x in scores]
    y = [np.asarray(x) for x in labels]
    assert out["AUC"] == pytest.approx(np.mean([metrics.roc_auc_score(a, b) for a, b in zip(y, s)]))
    assert out["MINDMRR"] == pytest.approx(np.mean([ref_mrr(a, b) for a, b in zip(y, s)]))
    for k in (5, 10):
        assert out[f"NDCG@{k}"] == pytest.approx(np.mean([ref_ndcg(a, b, k) for a, b in zip(y, s)]))


def test_ties_are_pessimistic() -> None:
    """sklearn counts a tied (click, non-click) pair as half right; attnrec as wrong, so a
    constant model cannot look better than chance."""
    out = mind_scores([[0.5, 0.5, 0.5, 0.5]], [[1, 0, 0, 1]])
    assert out["AUC"] == 0.0
    assert out["MINDMRR"] == pytest.approx(1 / 4)


def test_news_plugin_registers_through_its_entry_point() -> None:
    from attnrec import get_registry

    components = {c.name: c.kind for c in get_registry().plugins["news"].components}
    assert components == {
        "MINDDataModule": "data", "NRMSNewsEncoder": "encoders", "PLMNewsEncoder": "encoders",
        "NRMSUserEncoder": "encoders", "NRMS": "recommenders", "MINDMRR": "metrics",
    }  # fmt: skip
