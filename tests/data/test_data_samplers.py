"""Negative samplers, evaluation lists and the collate function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attnrec.data import Collate, EvalLists, NegativeSampler, SyntheticDataModule
from torch.utils.data import DataLoader


def small(**kwargs) -> SyntheticDataModule:
    dm = SyntheticDataModule(num_users=60, num_items=120, num_categories=4, max_len=10, **kwargs)
    dm.setup()
    return dm


def candidates_of(dm: SyntheticDataModule, stage: str) -> list[list[int]]:
    lists = dm.eval_lists(stage)
    return [lists[i]["candidates"].tolist() for i in range(len(lists))]


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_eval_negatives_exclude_seen_and_targets(sampling: str) -> None:
    dm = small(eval_negatives=30, eval_sampling=sampling)
    for stage in ("val", "test"):
        lists = dm.eval_lists(stage)
        assert len(lists) > 0
        for i in range(len(lists)):
            example = lists[i]
            targets, candidates = example["targets"].tolist(), example["candidates"].tolist()
            negatives = candidates[len(targets) :]
            assert candidates[: len(targets)] == targets
            assert example["labels"].tolist() == [1] * len(targets) + [0] * 30
            assert len(set(negatives)) == 30 and all(1 <= n <= dm.num_items for n in negatives)
            assert not set(negatives) & (set(example["seen"].tolist()) | set(targets))
    assert "sampled (30 " + sampling in dm.protocol["candidates"]


def test_eval_negatives_are_deterministic_however_reached() -> None:
    first = small(eval_negatives=20)
    direct = candidates_of(first, "test")
    assert direct == candidates_of(small(eval_negatives=20), "test")  # a fresh run
    lists = first.eval_lists("test")
    backwards = [lists[i]["candidates"].tolist() for i in reversed(range(len(lists)))][::-1]
    assert backwards == direct  # access order does not matter
    batched = []
    for batch in DataLoader(lists, batch_size=7, collate_fn=Collate(first.max_len)):
        batched.extend(row[row > 0].tolist() for row in batch["candidates"])
    assert batched == direct  # nor does going through a loader
    assert candidates_of(first, "val") != direct  # validation and test draw differently
    assert candidates_of(small(eval_negatives=20, seed=1), "test") != direct


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_popularity_sampling_follows_popularity() -> None:
    popularity = np.array([0, 400, 200, 100, 50, 0, 20])  # row 0 is padding
    sampler = NegativeSampler(6, "popularity", popularity)
    expected = (popularity[1:] + 1) / (popularity[1:] + 1).sum()  # add-one smoothing keeps item 5 drawable
    torch.manual_seed(0)
    ids, logq = sampler.sample((20000,))
    counts = np.bincount(ids.numpy(), minlength=7)[1:]
    # df = 5: the 99.9% quantile of chi-square is 20.5
    assert chi_square(counts, expected) < 20.5
    assert torch.allclose(logq, torch.log(torch.as_tensor(expected, dtype=torch.float32))[ids - 1])
    uniform = np.full(6, 1 / 6)
    assert chi_square(counts, uniform) > 1000  # and is far from uniform
    # evaluation draws (without replacement within a list) also favour popular items
    rng = np.random.default_rng(0)
    first = np.bincount([sampler.sample_excluding(rng, 1, set())[0] for _ in range(5000)], minlength=7)[1:]
    assert chi_square(first, expected) < 20.5


def test_eval_sampling_fails_clearly_when_too_few_items_remain() -> None:
    sampler = NegativeSampler(5)
    with pytest.raises(
        ValueError, match="cannot sample 3 negatives from 5 items when 3 are excluded; lower eval_negatives"
    ):
        sampler.sample_excluding(np.random.default_rng(0), 3, {1, 2, 3})


@pytest.mark.parametrize("mode", ["uniform", "popularity"])
def test_training_negatives_redraw_accidental_hits(mode: str) -> None:
    torch.manual_seed(0)
    sampler = NegativeSampler(3, mode, np.array([0, 5, 1, 1]))
    rng = np.random.default_rng(0)
    examples = [{"user": u, "history": rng.integers(1, 4, 6), "target": rng.integers(1, 4, 6)} for u in range(64)]
    batch = Collate(8, num_negatives=5, sampler=sampler)(examples)
    negatives, target = batch["negatives"], batch["target"]
    assert negatives.shape == (64, 8, 5)
    real = (target > 0).unsqueeze(-1).expand_as(negatives)
    # with 3 items a third of the draws hit the target before redrawing
    assert not bool((negatives == target.unsqueeze(-1))[real].any())
    assert set(negatives[real].unique().tolist()) <= {1, 2, 3}
    if mode == "popularity":
        assert torch.allclose(batch["negatives_logq"], sampler.log_prob(negatives))


def test_collate_left_pads_training_windows_and_right_pads_lists() -> None:
    examples = [
        {"user": 1, "history": np.array([5, 6, 7]), "target": np.array([6, 7, 8])},
        {"user": 2, "history": np.array([9]), "target": np.array([4])},
    ]
    batch = Collate(5)(examples)
    assert batch["user"].tolist() == [1, 2]
    assert batch["history"].tolist() == [[0, 0, 5, 6, 7], [0, 0, 0, 0, 9]]
    assert batch["target"].tolist() == [[0, 0, 6, 7, 8], [0, 0, 0, 0, 4]]
    assert "negatives" not in batch
    lists = EvalLists(
        np.array([3, 4]), [np.arange(1, 9), np.array([2])], [np.array([10, 11]), np.array([12])], max_len=4
    )
    batch = Collate(4)([lists[0], lists[1]])
    assert batch["history"].tolist() == [[5, 6, 7, 8], [0, 0, 0, 2]]  # the most recent max_len items
    assert batch["targets"].tolist() == [[10, 11], [12, 0]]
    assert batch["seen"].shape == (2, 8) and batch["seen"][1].tolist() == [2] + [0] * 7
    assert all(batch[k].dtype == torch.long for k in batch)


def test_loaders_have_the_documented_shapes() -> None:
    dm = small(num_negatives=3, eval_negatives=10, batch_size=16)
    batch = next(iter(dm.train_dataloader()))
    assert batch["history"].shape == batch["target"].shape == (16, 10)
    assert batch["negatives"].shape == (16, 10, 3)
    assert bool(((batch["history"] > 0) | (batch["target"] == 0)).all())  # a target only after some history
    val = next(iter(dm.val_dataloader()))
    assert val["candidates"].shape == val["labels"].shape == (min(256, len(dm.eval_lists("val"))), 11)
