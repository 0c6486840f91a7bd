"""The public extension points of SequenceDataModule: ``item_side``, ``build_split`` and
``collate_fn`` overridden through the public API, and ``user_batch`` for ``recommend``."""

from __future__ import annotations

from typing import Any, Callable

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from attnrec.data import InteractionDataModule, Loaded, Split
from attnrec.interfaces import Batch

SEQUENCES = {"a": "xyzutw", "b": "yxwztu", "c": "zxytu", "d": "v"}  # one item per letter, in time order
LOG = {
    "user": [user for user, items in SEQUENCES.items() for _ in items],
    "item": [item for items in SEQUENCES.values() for item in items],
    "timestamp": [float(t) for items in SEQUENCES.values() for t in range(len(items))],
    "weight": [0.5 * row for row in range(18)],
}
ITEMS = {"item": list("xyzutwv"), "shelf": ["top", "low", "top", "low", "top", "low", "top"]}


class Extended(InteractionDataModule):
    """Holds item ``w`` out of every part, reads a per-row weight, adds a feature and a batch key."""

    def load(self) -> Loaded:
        table = datasets.Dataset.from_dict(LOG)
        self.weights = np.asarray(LOG["weight"])  # one per loaded row
        return Loaded(table.remove_columns("weight"), datasets.Dataset.from_dict(ITEMS))

    def build_split(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        self.seen_rows = rows
        self.row_weights = self.weights[rows]
        keep = items != self.item_map.index("w")
        return super().build_split(users[keep], items[keep], times[keep], rows[keep])

    def item_side(self, items: pa.Table | None) -> dict[str, Any]:
        side = super().item_side(items)
        side["features"]["double_id"] = torch.arange(self.num_items + 1) * 2
        return side

    def collate_fn(self, stage: str) -> Callable[[list[dict]], Batch]:
        inner = super().collate_fn(stage)

        def collate(examples: list[dict]) -> Batch:
            batch = inner(examples)
            batch["stage_" + stage] = torch.ones(len(examples))
            return batch

        return collate


def test_build_split_gets_rows_of_the_loaded_table_and_feeds_the_catalog() -> None:
    dm = Extended(k_core=2, max_len=3, batch_size=2)
    assert dm.num_users == 3 and dm.item_map.raw[1:] == list("tuwxyz")  # k-core dropped user d and item v
    assert dm.seen_rows.tolist() == list(range(17))  # the last row (d, v) filtered out
    assert dm.row_weights.tolist() == LOG["weight"][:17]
    w = dm.item_map.index("w")
    split = dm.split_data
    assert all(w not in part[u] for part in (split.train, split.val, split.test) for u in range(1, 4))
    catalog = dm.catalog
    train = np.concatenate(split.train)
    assert catalog.popularity.tolist() == np.bincount(train, minlength=7).tolist() and catalog.popularity[w] == 0
    assert w not in catalog.train_edges[1].tolist() and catalog.train_edges.shape == (2, len(train))


def test_item_side_extends_the_core_features() -> None:
    dm = Extended(k_core=2)
    features = dm.catalog.features
    assert features["double_id"].tolist() == [0, 2, 4, 6, 8, 10, 12]  # the subclass's feature
    shelf = features["shelf"]  # the core's: string column -> codes 1..V
    assert shelf[dm.item_map.index("x")] == shelf[dm.item_map.index("z")] != shelf[dm.item_map.index("y")]


def test_collate_fn_reaches_every_loader_and_user_batch() -> None:
    dm = Extended(k_core=2, max_len=3, batch_size=2)
    for stage, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader()), ("predict", dm.predict_dataloader())):  # fmt: skip
        assert f"stage_{stage}" in next(iter(loader))
    assert "stage_predict" in dm.user_batch(["a"])


def test_user_batch_shapes_history_seen_and_ids() -> None:
    dm = Extended(k_core=2, max_len=2)
    batch = dm.user_batch(["c", "a"])
    c, a = dm.user_map.index("c"), dm.user_map.index("a")
    assert batch["user"].tolist() == [c, a]
    everything_a = dm.user_history("a").tolist()
    assert [dm.item_map.raw[i] for i in everything_a] == list("xyzut")  # w is held out by the subclass
    assert batch["history"].shape == (2, 2) and batch["history"][1].tolist() == everything_a[-2:]  # the latest
    assert batch["seen"].shape == (2, 5) and batch["seen"][1].tolist() == everything_a
    assert batch["seen"][0].tolist() == dm.user_history("c").tolist()  # c has five items too
    short = Extended(max_len=4, batching="fixed").user_batch(["d"])  # one interaction: left-padded to max_len
    assert short["history"].tolist() == [[0, 0, 0, short["seen"][0, 0].item()]]
    assert Extended(max_len=4).user_batch(["d"])["history"].tolist() == [[short["seen"][0, 0].item()]]  # or not
    assert dm.max_len == 2  # what the CLI links into the model


def test_user_batch_unknown_user_names_the_data_and_its_size() -> None:
    dm = Extended(k_core=2)
    with pytest.raises(KeyError, match=r"user 'nobody' is not in Extended \(3 users\)"):
        dm.user_batch(["a", "nobody"])
    with pytest.raises(ValueError, match="at least one user"):
        dm.user_batch([])
