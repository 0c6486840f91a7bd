"""Data modules for graph models: interactions + a knowledge graph, and LightGCN's given split.

Every interaction data module already puts the training graph in its catalog
(``train_edges``, ``num_users``); these add what graph papers need on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from attnrec.data import (
    DataFormatError, EvalLists, InteractionDataModule, Loaded, SequenceDataModule, Split, SyntheticDataModule,
)  # fmt: skip
from attnrec.data.interactions import SplitName, sequences

from .kg import KGStats, category_kg, kg_features, read_kg

GIVEN_SPLIT = ("split", "val_ratio", "test_ratio")
"""Base arguments LightGCNFilesDataModule fixes: its files are the split."""


class KGDataModule(InteractionDataModule):
    """Interactions (any format ``InteractionDataModule`` reads) plus a knowledge graph from
    RecBole atomic files: ``kg_path`` (``head_id:token relation_id:token tail_id:token``) and
    ``link_path`` (``item_id:token entity_id:token``). The KG lands in the catalog as the
    ``kg_entity``/``kg_relation`` features (see :mod:`attnrec_graph.kg`). Defaults to the
    graph-CF protocol (random 70/10/20 split per user, one BPR negative); the other arguments
    are :class:`~attnrec.data.InteractionDataModule`'s and :class:`~attnrec.data.SequenceDataModule`'s."""

    def __init__(
        self,
        kg_path: str,
        link_path: str,
        split: SplitName = "ratio",
        test_ratio: float = 0.2,
        num_negatives: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(split=split, test_ratio=test_ratio, num_negatives=num_negatives, **kwargs)
        self.save_hyperparameters(ignore=["table"])
        self.kg_path, self.link_path = kg_path, link_path
        self.kg_stats: KGStats | None = None

    def item_side(self, items: pa.Table | None) -> dict[str, Any]:
        """The item table's features plus the KG's ``kg_entity``/``kg_relation``."""
        side = super().item_side(items)
        triples, links = read_kg(self.kg_path, self.link_path)
        features, self.kg_stats = kg_features(self.item_map, triples, links, f"{self.kg_path} + {self.link_path}")
        side.setdefault("features", {}).update(features)
        return side


class SyntheticKGDataModule(SyntheticDataModule):
    """The bundled synthetic shop with a generated KG: each item links to its category entity
    (relation ``has_category``), built deterministically from the generator's item table, so
    the KG model has something to attend over without a download. Defaults to the graph-CF
    protocol (random 80/10/10 split per user, one BPR negative); the other arguments are
    :class:`~attnrec.data.SyntheticDataModule`'s and :class:`~attnrec.data.SequenceDataModule`'s."""

    def __init__(self, split: SplitName = "ratio", num_negatives: int = 1, **kwargs: Any) -> None:
        super().__init__(split=split, num_negatives=num_negatives, **kwargs)
        self.save_hyperparameters()
        self.kg_stats: KGStats | None = None

    @property
    def name(self) -> str:
        return f"synthetic-shop+category-kg(seed={self.generator_args['seed']})"

    def item_side(self, items: pa.Table | None) -> dict[str, Any]:
        """The generator's ``category`` feature plus the category KG built from it."""
        side = super().item_side(items)
        assert items is not None  # the generator always returns its item table
        triples, links = category_kg(items.to_pandas())
        features, self.kg_stats = kg_features(self.item_map, triples, links, "synthetic category KG")
        side.setdefault("features", {}).update(features)
        return side


class LightGCNFilesDataModule(SequenceDataModule):
    """The fixed split of the LightGCN/NGCF repositories: ``train.txt`` and ``test.txt`` with one
    line per user, ``user item item ...`` (0-based integer ids, space-separated).
    ``train_paths`` may list several files that together form the training set (e.g. parts of a
    split archive). There is no validation split (the papers report test figures), so
    validation runs on the test lists: do not select checkpoints by it. The files fix the
    split, so ``split``, ``val_ratio`` and ``test_ratio`` are not arguments; the others are
    :class:`~attnrec.data.SequenceDataModule`'s (defaulting to one BPR negative).
    """

    def __init__(self, train_paths: list[str], test_path: str, num_negatives: int = 1, **kwargs: Any) -> None:
        super().__init__(split="temporal", val_ratio=0.0, test_ratio=0.0, num_negatives=num_negatives, **kwargs)
        self.save_hyperparameters(ignore=list(GIVEN_SPLIT))  # fixed here, so not arguments to rebuild it with
        if isinstance(train_paths, str):
            train_paths = [train_paths]
        self.train_paths, self.test_path = list(train_paths), test_path

    @property
    def name(self) -> str:
        return str(Path(self.test_path).parent.name or "lightgcn-files")

    def load(self) -> Loaded:
        """Train lines get time 0 and test lines time 1 (see :meth:`build_split`)."""
        train_u, train_i = _read_lists(self.train_paths)
        test_u, test_i = _read_lists([self.test_path])
        users = np.concatenate([train_u, test_u])
        items = np.concatenate([train_i, test_i])
        times = np.concatenate([np.zeros(len(train_u)), np.ones(len(test_u))])
        table = pa.table({"user": users, "item": items, "timestamp": times})
        return Loaded(table)

    def build_split(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        """The given split: lines of the train files train, lines of the test file test."""
        num_users = len(self.user_map)
        train, test = times == 0, times == 1
        empty = [np.zeros(0, dtype=np.int64)] * (num_users + 1)
        return Split(
            sequences(users[train], items[train], times[train], num_users),
            empty,
            sequences(users[test], items[test], times[test], num_users),
        )

    def eval_lists(self, stage: str, targets: list[np.ndarray] | None = None) -> EvalLists:
        """Validation runs on the test lists (the files have no validation part)."""
        return super().eval_lists("test", targets)

    @property
    def protocol(self) -> dict[str, str]:
        protocol = dict(super().protocol)
        protocol["split"] = f"given files (train: {', '.join(Path(p).name for p in self.train_paths)}; test: {Path(self.test_path).name})"
        return protocol


def _read_lists(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    users: list[int] = []
    items: list[int] = []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file; pass LightGCN-format files (lines 'user item item ...')")
        with open(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    ids = [int(x) for x in fields]
                except ValueError:
                    raise DataFormatError(
                        f"{path}, line {line_no}: non-integer id in {line.strip()[:60]!r}; lines must be 'user item item ...'"
                    ) from None
                users.extend([ids[0]] * (len(ids) - 1))
                items.extend(ids[1:])
    if not users:
        raise DataFormatError(f"{paths}: no interactions; lines must be 'user item item ...'")
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
