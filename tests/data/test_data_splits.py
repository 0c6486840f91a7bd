"""Splits, leakage, id maps and k-core filtering."""

from __future__ import annotations

from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from attnrec.data import InteractionDataModule, k_core


def random_log(seed: int = 0, users: int = 40, items: int = 60) -> datasets.Dataset:
    """Unique (user, item) pairs with distinct times, so every interaction can be traced."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        length = int(rng.integers(1, 25))
        for item in rng.choice(items, size=length, replace=False):
            rows.append((f"u{user}", f"i{item}"))
    times = rng.permutation(len(rows)).astype(float)
    return datasets.Dataset.from_dict(
        {"user": [u for u, _ in rows], "item": [i for _, i in rows], "timestamp": times.tolist()}
    )


def module(table: datasets.Dataset, **kwargs) -> InteractionDataModule:
    dm = InteractionDataModule(table=table, **kwargs)
    dm.setup()
    return dm


def parts(dm: InteractionDataModule) -> dict[str, set[tuple[str, str]]]:
    """The raw (user, item) pairs of each part."""
    out = {}
    for name in ("train", "val", "test"):
        seqs = getattr(dm.split_data, name)
        out[name] = {(dm.user_map.raw[u], dm.item_map.raw[i]) for u in range(1, dm.num_users + 1) for i in seqs[u]}
        assert sum(len(seqs[u]) for u in range(1, dm.num_users + 1)) == len(out[name])  # no duplicates
    return out


def times_of(table: datasets.Dataset) -> dict[tuple[str, str], float]:
    return {(u, i): t for u, i, t in zip(table["user"], table["item"], table["timestamp"])}


@pytest.mark.parametrize("how", ["loo", "temporal", "ratio"])
def test_parts_partition_the_interactions(how: str) -> None:
    table = random_log()
    got = parts(module(table, split=how, val_ratio=0.2, test_ratio=0.2))
    everything = set(times_of(table))
    assert got["train"] | got["val"] | got["test"] == everything
    assert not (got["train"] & got["val"]) and not (got["train"] & got["test"]) and not (got["val"] & got["test"])


def test_leave_one_out_holds_out_the_last_two_by_time() -> None:
    table = random_log(1)
    dm = module(table)
    times = times_of(table)
    by_user: dict[str, list[tuple[float, str]]] = {}
    for (user, item), t in times.items():
        by_user.setdefault(user, []).append((t, item))
    for user, events in by_user.items():
        index = dm.user_map.index(user)
        ordered = [item for _, item in sorted(events)]
        train = [dm.item_map.raw[i] for i in dm.split_data.train[index]]
        val = [dm.item_map.raw[i] for i in dm.split_data.val[index]]
        test = [dm.item_map.raw[i] for i in dm.split_data.test[index]]
        if len(ordered) >= 3:
            assert (train, val, test) == (ordered[:-2], ordered[-2:-1], ordered[-1:])
        else:
            assert (train, val, test) == (ordered, [], [])


def test_temporal_cutoffs_are_respected() -> None:
    table = random_log(2)
    got = parts(module(table, split="temporal", val_ratio=0.15, test_ratio=0.25))
    times = times_of(table)
    train, val, test = ([times[p] for p in got[k]] for k in ("train", "val", "test"))
    assert max(train) < min(val) and max(val) < min(test)
    n = len(times)
    assert abs(len(test) - 0.25 * n) <= 1 and abs(len(val) - 0.15 * n) <= 1


def test_ratio_split_proportions_and_seed() -> None:
    table = random_log(3)
    dm = module(table, split="ratio", val_ratio=0.1, test_ratio=0.2, seed=7)
    for user in range(1, dm.num_users + 1):
        n = sum(len(getattr(dm.split_data, k)[user]) for k in ("train", "val", "test"))
        if n >= 3:
            assert len(dm.split_data.test[user]) == min(round(n * 0.2), n - 1)
            assert len(dm.split_data.val[user]) == min(round(n * 0.1), n - 1 - len(dm.split_data.test[user]))
            assert len(dm.split_data.train[user]) >= 1
    again = parts(module(table, split="ratio", val_ratio=0.1, test_ratio=0.2, seed=7))
    other = parts(module(table, split="ratio", val_ratio=0.1, test_ratio=0.2, seed=8))
    assert again == parts(dm)
    assert other["test"] != again["test"]


@pytest.mark.parametrize("how", ["loo", "temporal", "ratio"])
def test_no_evaluation_interaction_leaks_into_training(how: str) -> None:
    dm = module(random_log(4), split=how, val_ratio=0.2, test_ratio=0.2)
    s, catalog = dm.split_data, dm.catalog
    edges = {(int(u), int(i)) for u, i in catalog.train_edges.T.tolist()}
    train_pairs = {(u, int(i)) for u in range(1, dm.num_users + 1) for i in s.train[u]}
    held_out = {(u, int(i)) for u in range(1, dm.num_users + 1) for i in (*s.val[u], *s.test[u])}
    assert edges == train_pairs and catalog.train_edges.shape[1] == len(train_pairs)
    assert not (edges & held_out)
    expected = np.bincount([i for _, i in train_pairs], minlength=dm.num_items + 1)
    assert catalog.popularity.numpy().tolist() == expected.tolist()
    # training windows and validation histories only show training items
    windows = dm.train_dataloader().dataset
    for k in range(len(windows)):
        example = windows[k]
        user = example["user"]
        assert set(example["history"].tolist()) | set(example["target"].tolist()) <= set(s.train[user].tolist())
    val = dm.eval_lists("val")
    for k in range(len(val)):
        example = val[k]
        assert set(example["history"].tolist()) <= set(s.train[example["user"]].tolist())
        assert not set(example["targets"].tolist()) & set(s.train[example["user"]].tolist())


def test_id_maps_do_not_depend_on_split_or_row_order() -> None:
    table = random_log(5)
    shuffled = table.shuffle(seed=3)
    maps = []
    for source, how in ((table, "loo"), (shuffled, "temporal"), (shuffled, "ratio")):
        dm = module(source, split=how)
        maps.append((dm.user_map.raw, dm.item_map.raw, dm.catalog.raw_ids))
    assert maps[0] == maps[1] == maps[2]
    # ids follow the sorted raw ids, not first appearance in time (which would make the next
    # new item "max id + 1"); this log is one where the two orders differ
    dm = module(table)
    assert dm.item_map.raw[1:] == sorted(dm.item_map.raw[1:])
    first_seen: dict[str, float] = {}
    for item, t in zip(table["item"], table["timestamp"]):
        first_seen[item] = min(t, first_seen.get(item, np.inf))
    by_appearance = {item: k + 1 for k, item in enumerate(sorted(first_seen, key=first_seen.get))}
    assigned = {item: dm.item_map.index(item) for item in first_seen}
    assert assigned == {item: k + 1 for k, item in enumerate(sorted(first_seen))}
    assert assigned != by_appearance


def brute_force_k_core(users: list[str], items: list[str], k: int) -> set[int]:
    alive = set(range(len(users)))
    while True:
        user_count = Counter(users[r] for r in alive)
        item_count = Counter(items[r] for r in alive)
        drop = {r for r in alive if user_count[users[r]] < k or item_count[items[r]] < k}
        if not drop:
            return alive
        alive -= drop


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_core_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    users = [f"u{x}" for x in rng.integers(0, 30, 400)]
    items = [f"i{x}" for x in rng.zipf(1.6, 400) % 50]
    keep = k_core(np.asarray(users), np.asarray(items), k)
    assert set(np.flatnonzero(keep).tolist()) == brute_force_k_core(users, items, k)
    kept = Counter(u for u, ok in zip(users, keep) if ok), Counter(i for i, ok in zip(items, keep) if ok)
    assert all(c >= k for c in kept[0].values()) and all(c >= k for c in kept[1].values())


def test_k_core_in_the_data_module_records_filtering() -> None:
    dm = module(random_log(6), k_core=3)
    assert dm.protocol["filtering"] == "3-core"
    counts = Counter(int(i) for u in range(1, dm.num_users + 1) for p in ("train", "val", "test")
                     for i in getattr(dm.split_data, p)[u])  # fmt: skip
    assert min(counts.values()) >= 3


@pytest.mark.parametrize(
    "times",
    [
        np.arange(300) % 7 * 1e9,  # whole seconds, many ties: one int64 key
        (np.arange(300) % 7).astype(np.int32) - 3,  # integer times below zero
        np.arange(300) % 7 + 0.5,  # fractions: Arrow's sort
        np.where(np.arange(300) % 2, 0.0, 2.0**60),  # a span the key cannot hold
    ],
)
def test_sequences_order_each_user_by_time_ties_in_the_given_order(times: np.ndarray) -> None:
    from attnrec.data.interactions import sequences

    rng = np.random.default_rng(0)
    order = rng.permutation(300)
    users, times = rng.integers(1, 9, 300)[order], times[order]
    items = np.arange(300)  # each row's own item shows where it went
    expected = np.lexsort((items, times, users))  # ties by row
    threads = torch.get_num_threads()
    got = sequences(users, items, times, 9)
    assert torch.get_num_threads() == threads  # the sort's one thread was given back
    assert len(got) == 10 and len(got[0]) == 0
    assert np.concatenate(got).tolist() == items[expected].tolist()
