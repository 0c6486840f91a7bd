"""Ranking protocols: tie-pessimism, NaN as an error, chunking, masking, and catalogue metrics."""

from __future__ import annotations

import math

import pytest
import torch

from attnrec.data import SyntheticDataModule
from attnrec.evaluation import DenseScoring, RankingEvaluator, evaluate_popularity, gini, rank_candidates, rank_full
from attnrec.metrics import AUC, HR, MRR, NDCG


def test_constant_scorer_gets_the_worst_rank() -> None:
    n = 30
    scores = torch.zeros(4, n + 1)
    targets = torch.tensor([[3], [7], [30], [1]])
    seen = torch.tensor([[1, 2], [0, 0], [5, 0], [0, 0]])
    ranking = rank_full(DenseScoring(scores), n + 1, targets, seen, 10)
    assert ranking.num_candidates.tolist() == [28, 30, 29, 30]
    assert ranking.ranks[:, 0].tolist() == [28.0, 30.0, 29.0, 30.0]
    evaluator = RankingEvaluator([HR(), AUC()], [10], n)
    evaluator.update(ranking)
    assert {k: float(v) for k, v in evaluator.compute().items()} == {"HR@10": 0.0, "AUC": 0.0}

    cands = torch.arange(1, 21).repeat(4, 1)
    labels = torch.zeros(4, 20, dtype=torch.long)
    labels[:, 0] = 1
    ranking = rank_candidates(torch.ones(4, 20), cands, labels, 10)
    assert ranking.ranks[:, 0].tolist() == [20.0] * 4


@pytest.mark.parametrize("where", ["item", "target"])
def test_nan_scores_raise_and_never_count_as_hits(where: str) -> None:
    scores = torch.rand(2, 11)
    targets = torch.tensor([[4], [5]])
    if where == "item":
        scores[1, 9] = float("nan")
    else:
        scores[0, 4] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        rank_full(DenseScoring(scores), 11, targets, None, 3)
    cands = torch.tensor([[4, 1, 2], [5, 9, 3]])
    with pytest.raises(FloatingPointError, match="NaN"):
        rank_candidates(DenseScoring(scores).items(cands), cands, torch.tensor([[1, 0, 0], [1, 0, 0]]), 3)


def test_chunked_full_ranking_equals_one_chunk_and_torch_topk() -> None:
    gen = torch.Generator().manual_seed(0)
    b, n, k = 16, 97, 10
    scores = torch.randn(b, n + 1, generator=gen)
    targets = torch.randint(1, n + 1, (b, 3), generator=gen)
    targets[::2, 1:] = 0  # some lists have one target
    seen = torch.randint(0, n + 1, (b, 12), generator=gen)
    one = rank_full(DenseScoring(scores), n + 1, targets, seen, k)
    for chunk_size in (1, 5, 13, 40):
        chunked = rank_full(DenseScoring(scores), n + 1, targets, seen, k, chunk_size=chunk_size)
        assert torch.equal(chunked.ranks, one.ranks)
        assert torch.equal(chunked.num_candidates, one.num_candidates)
        assert torch.equal(chunked.topk, one.topk)
    # the running top-k is torch.topk over the masked full matrix
    masked = scores.clone()
    masked[:, 0] = -math.inf
    for u in range(b):
        hidden = seen[u][(seen[u] != 0) & ~torch.isin(seen[u], targets[u])]
        masked[u, hidden] = -math.inf
    assert torch.equal(one.topk, masked.topk(k, dim=1).indices)
    # and the ranks are 1 + the number of valid items scoring at least as high
    for u in range(b):
        for j, t in enumerate(targets[u].tolist()):
            expected = float((masked[u] >= scores[u, t]).sum()) if t else math.inf  # counts the target itself
            assert one.ranks[u, j].item() == expected


def test_seen_items_are_masked_but_a_seen_target_stays_rankable() -> None:
    n = 20
    scores = torch.arange(n + 1, dtype=torch.float).flip(0).unsqueeze(0)  # item 1 best, item 20 worst
    seen = torch.tensor([[1, 2, 3, 6]])
    targets = torch.tensor([[6]])  # also in seen, e.g. a repeat purchase
    ranking = rank_full(DenseScoring(scores), n + 1, targets, seen, 5)
    # items 1-3 are masked, item 6 is not: 4 and 5 are above it
    assert ranking.ranks.tolist() == [[3.0]]
    assert ranking.num_candidates.tolist() == [n - 3]
    assert ranking.topk.tolist() == [[4, 5, 6, 7, 8]]


def test_a_target_scored_minus_infinity_ranks_last_among_valid_items() -> None:
    n = 10
    scores = torch.rand(1, n + 1)
    scores[0, 5] = -math.inf
    ranking = rank_full(DenseScoring(scores), n + 1, torch.tensor([[5]]), torch.tensor([[1, 2, 3]]), 3)
    assert ranking.ranks.tolist() == [[7.0]]  # items 4 and 6..10 are above it; 0 and 1..3 are masked
    assert AUC()(ranking.ranks, ranking.num_relevant, ranking.num_candidates, None).item() == 0.0


def test_top_k_past_the_valid_items_is_padding_not_a_seen_item() -> None:
    scores = torch.rand(2, 7)
    ranking = rank_full(DenseScoring(scores), 7, torch.zeros(2, 0, dtype=torch.long), torch.tensor([[1, 2, 3], [0, 0, 0]]), 5)
    assert ranking.topk[0, 3:].tolist() == [0, 0] and sorted(ranking.topk[0, :3].tolist()) == [4, 5, 6]
    assert (ranking.topk[1] != 0).all()


def test_padding_item_is_never_recommended_or_ranked() -> None:
    n = 8
    scores = torch.rand(3, n + 1)
    scores[:, 0] = 1e6
    targets = torch.tensor([[1], [2], [3]])
    ranking = rank_full(DenseScoring(scores), n + 1, targets, None, n)
    assert not (ranking.topk == 0).any()
    assert ranking.num_candidates.tolist() == [n] * 3
    assert (ranking.ranks <= n).all()


def test_catalogue_metrics_on_a_hand_case() -> None:
    # 4 items, popularity 0 | 4, 2, 1, 1; two users get top-2 lists [1, 2] and [1, 3]
    popularity = torch.tensor([0.0, 4.0, 2.0, 1.0, 1.0])
    cands = torch.tensor([[1, 2, 3, 4], [1, 3, 2, 4], [1, 2, 3, 4]])
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0], [1.0, 4.0, 3.0, 2.0]])
    labels = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
    users = torch.tensor([1, 2, 1])
    evaluator = RankingEvaluator([HR(), AUC()], [2], 4, num_users=2, popularity=popularity)
    evaluator.update(rank_candidates(scores, cands, labels, 2), users)
    got = {k: float(v) for k, v in evaluator.compute().items()}
    # top-2 lists: [1, 2], [1, 3], [2, 3] -> items 1..4 recommended 2, 2, 2, 0 times
    assert got["Coverage@2"] == 0.75
    share = popularity / popularity.sum()
    novelty = [(-math.log2(share[a]) - math.log2(share[b])) / 2 for a, b in ((1, 2), (1, 3), (2, 3))]
    assert got["Novelty@2"] == pytest.approx(sum(novelty) / 3)
    assert got["Gini@2"] == pytest.approx(float(gini(torch.tensor([2.0, 2.0, 2.0, 0.0]))))
    assert got["Gini@2"] == pytest.approx(0.25)  # sorted (0,2,2,2): sum((2i-n-1) x_i) / (n sum) = 6 / 24
    # AUC per list: 1, 2/3, 0 (item 1 is below all three others); GAUC averages users 1 and 2
    assert got["AUC"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert got["GAUC"] == pytest.approx(((1 + 0) / 2 + 2 / 3) / 2)
    assert got["HR@2"] == pytest.approx(2 / 3)


def test_novelty_ignores_the_padding_of_short_candidate_lists() -> None:
    popularity = torch.tensor([0.0, 1.0, 1.0, 2.0])  # shares 1/4, 1/4, 1/2
    cands = torch.tensor([[1, 3, 0], [2, 1, 3]])  # the first impression list has two items
    labels = torch.tensor([[1, 0, 0], [1, 0, 0]])
    scores = torch.tensor([[2.0, 1.0, 0.0], [3.0, 2.0, 1.0]])
    evaluator = RankingEvaluator([HR()], [3], 3, popularity=popularity)
    evaluator.update(rank_candidates(scores, cands, labels, 3))
    got = {k: float(v) for k, v in evaluator.compute().items()}
    assert got["Novelty@3"] == pytest.approx(((2 + 1) / 2 + (2 + 2 + 1) / 3) / 2)
    assert got["Coverage@3"] == 1.0


def test_gini_extremes() -> None:
    assert float(gini(torch.tensor([3.0, 3.0, 3.0]))) == 0.0
    assert float(gini(torch.tensor([0.0, 0.0, 0.0, 9.0]))) == pytest.approx(0.75)  # (n - 1) / n
    assert float(gini(torch.zeros(5))) == 0.0


def test_evaluator_sums_are_exact_when_split_across_updates() -> None:
    """What DDP relies on: evaluating lists in two halves and adding the states gives the same figures."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(30, 41, generator=gen)
    targets = torch.randint(1, 41, (30, 2), generator=gen)
    whole = RankingEvaluator([HR(), NDCG(), MRR(), AUC()], [5, 10], 40)
    whole.update(rank_full(DenseScoring(scores), 41, targets, None, 10))
    a, b = (RankingEvaluator([HR(), NDCG(), MRR(), AUC()], [5, 10], 40) for _ in range(2))
    a.update(rank_full(DenseScoring(scores[:13]), 41, targets[:13], None, 10))
    b.update(rank_full(DenseScoring(scores[13:]), 41, targets[13:], None, 10))
    a.sums += b.sums
    a.lists += b.lists
    assert {k: float(v) for k, v in a.compute().items()} == pytest.approx(
        {k: float(v) for k, v in whole.compute().items()}, rel=1e-12
    )


def test_popularity_baseline_matches_a_brute_force_count() -> None:
    """The baseline every model test compares with: item popularity as the score, seen masked."""
    datamodule = SyntheticDataModule(num_users=150, num_items=130, max_len=10)
    got = evaluate_popularity(datamodule, "val", metrics=("HR", "MRR"), ks=(10,))
    popularity = datamodule.catalog.popularity
    lists = datamodule.eval_lists("val")
    hits, reciprocal = 0.0, 0.0
    for seen, (target,) in zip(lists.histories, lists.targets):
        allowed = torch.ones(datamodule.num_items + 1, dtype=torch.bool)
        allowed[0] = False
        allowed[torch.as_tensor(seen)] = False
        allowed[target] = True
        rank = int((popularity[allowed] >= popularity[target]).sum())  # ties: the worst rank
        hits += rank <= 10
        reciprocal += 1 / rank if rank <= 10 else 0.0
    assert got["HR@10"] == pytest.approx(hits / len(lists))
    assert got["MRR@10"] == pytest.approx(reciprocal / len(lists))
    assert got["HR@10"] > 0.05  # the skew makes the baseline non-trivial
