"""Data modules for graph models: interactions + a knowledge graph, and LightGCN's given split.

Every interaction data module already puts the training graph in its catalog
(``train_edges``, ``num_users``); these add what graph papers need on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
from attnrec.data import DataFormatError, EvalLists, InteractionDataModule, Loaded, SyntheticDataModule

from .kg import KGStats, category_kg, kg_features, read_kg


class KGDataModule(InteractionDataModule):
    """Interactions (any format ``InteractionDataModule`` reads) plus a knowledge graph from
    RecBole atomic files: ``kg_path`` (``head_id:token relation_id:token tail_id:token``) and
    ``link_path`` (``item_id:token entity_id:token``). The KG lands in the catalog as the
    ``kg_entity``/``kg_relation`` features (see :mod:`attnrec_graph.kg`)."""

    def __init__(
        self,
        kg_path: str,
        link_path: str,
        path: str | None = None,
        columns: dict[str, str] | None = None,
        sep: str | None = None,
        items_path: str | None = None,
        k_core: int = 0,
        split: str = "ratio",
        val_ratio: float = 0.1,
        test_ratio: float = 0.2,
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_negatives: int = 1,
        negative_sampling: str = "uniform",
        num_workers: int = 0,
        seed: int = 0,
        table: datasets.Dataset | None = None,
    ) -> None:
        super().__init__(
            path=path, columns=columns, sep=sep, items_path=items_path, k_core=k_core, split=split,
            val_ratio=val_ratio, test_ratio=test_ratio, max_len=max_len, batch_size=batch_size,
            eval_batch_size=eval_batch_size, num_negatives=num_negatives, negative_sampling=negative_sampling,
            num_workers=num_workers, seed=seed, table=table,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["table"])
        self.kg_path, self.link_path = kg_path, link_path
        self.kg_stats: KGStats | None = None

    def _kg(self, items: datasets.Dataset | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
        triples, links = read_kg(self.kg_path, self.link_path)
        return triples, links, f"{self.kg_path} + {self.link_path}"

    def _item_side(self, items: datasets.Dataset | None) -> dict[str, Any]:
        side = super()._item_side(items)
        triples, links, source = self._kg(items)
        features, self.kg_stats = kg_features(self.item_map, triples, links, source)
        side.setdefault("features", {}).update(features)
        return side


class SyntheticKGDataModule(SyntheticDataModule):
    """The bundled synthetic shop with a generated KG: each item links to its category entity
    (relation ``has_category``), built deterministically from the generator's item table, so
    the KG model has something to attend over without a download. Defaults to the graph-CF
    protocol (random 80/10/10 split per user, one BPR negative)."""

    def __init__(
        self,
        num_users: int = 2000,
        num_items: int = 800,
        num_categories: int = 16,
        p_transition: float = 0.5,
        generator_seed: int = 0,
        split: str = "ratio",
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_negatives: int = 1,
        negative_sampling: str = "uniform",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_users=num_users, num_items=num_items, num_categories=num_categories, p_transition=p_transition,
            generator_seed=generator_seed, split=split, max_len=max_len, batch_size=batch_size,
            eval_batch_size=eval_batch_size, num_negatives=num_negatives, negative_sampling=negative_sampling,
            num_workers=num_workers, seed=seed,
        )  # fmt: skip
        self.save_hyperparameters()
        self.kg_stats: KGStats | None = None

    @property
    def name(self) -> str:
        return f"synthetic-shop+category-kg(seed={self.generator_args['seed']})"

    def _item_side(self, items: datasets.Dataset | None) -> dict[str, Any]:
        side = super()._item_side(items)
        assert items is not None  # the generator always returns its item table
        triples, links = category_kg(items.to_pandas())
        features, self.kg_stats = kg_features(self.item_map, triples, links, "synthetic category KG")
        side.setdefault("features", {}).update(features)
        return side


class LightGCNFilesDataModule(InteractionDataModule):
    """The fixed split of the LightGCN/NGCF repositories: ``train.txt`` and ``test.txt`` with one
    line per user, ``user item item ...`` (0-based integer ids, space-separated).
    ``train_paths`` may list several files that together form the training set (e.g. parts of a
    split archive). There is no validation split (the papers report test figures), so
    validation runs on the test lists: do not select checkpoints by it.
    """

    def __init__(
        self,
        train_paths: list[str],
        test_path: str,
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_negatives: int = 1,
        negative_sampling: str = "uniform",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            split="temporal", val_ratio=0.0, max_len=max_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_negatives=num_negatives, negative_sampling=negative_sampling, num_workers=num_workers, seed=seed,
        )  # fmt: skip
        self.save_hyperparameters()
        if isinstance(train_paths, str):
            train_paths = [train_paths]
        self.train_paths, self.test_path = list(train_paths), test_path

    @property
    def name(self) -> str:
        return str(Path(self.test_path).parent.name or "lightgcn-files")

    def load(self) -> Loaded:
        """Train lines get time 0 and test lines time 1; the global temporal split with the
        test share set to exactly the test lines then reproduces the given split."""
        train_u, train_i = _read_lists(self.train_paths)
        test_u, test_i = _read_lists([self.test_path])
        users = np.concatenate([train_u, test_u])
        items = np.concatenate([train_i, test_i])
        times = np.concatenate([np.zeros(len(train_u)), np.ones(len(test_u))])
        self.test_ratio = (len(test_u) - 0.5) / len(users)
        table = datasets.Dataset.from_dict({"user": users, "item": items, "timestamp": times})
        return Loaded(table)

    def eval_lists(self, stage: str) -> EvalLists:
        return super().eval_lists("test")

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
