"""Data modules for social recommendation: interactions with graded feedback (listen counts)
plus a user-user network.

The network reaches the model through the catalog: :class:`SocialCatalog` is an
``ItemCatalog`` that also carries ``social_edges`` (and the users' raw ids, to name friends), so
the CLI's one ``catalog`` link serves it; the model keeps the edges in its ``state_dict``, so a
checkpoint holds them too. Listen counts become per-target loss weights (``target_weight``,
which the core's loss reduction uses): ``log1p(count)`` by default.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from attnrec.data import DataFormatError, EvalLists, InteractionDataModule, Loaded, Split, read_table
from attnrec.data.interactions import SplitName, sequences
from attnrec.data.tables import as_columns
from attnrec.interfaces import Batch, ItemCatalog
from torch import Tensor

from .social import Policy, SocialStats, SocialTable, read_social_table, social_graph

Weighting = Literal["log", "linear", "none"]
SAMPLE = Path(__file__).resolve().parent / "data"


class SocialCatalog(ItemCatalog):
    """An ``ItemCatalog`` plus the social network ``social_edges [2, E]`` (internal user ids,
    friend -> user, see :func:`attnrec_social.social.social_graph`) and ``user_ids`` (internal
    -> raw, entry 0 padding). Its ``state()`` is the base's, so checkpoints load with the core's
    catalog; the model stores the edges in its own ``state_dict``."""

    def __init__(self, base: ItemCatalog, social_edges: Tensor, user_ids: list[Any]) -> None:
        super().__init__(**base.state())
        if social_edges.numel() and int(social_edges.max()) > self.num_users:
            raise ValueError(f"SocialCatalog: social_edges name users beyond 1..{self.num_users}")
        self.social_edges = social_edges
        self.user_ids = user_ids


class SocialDataModule(InteractionDataModule):
    """Interactions from a CSV/TSV/Parquet/JSON Lines file (``path``, ``columns``, ``sep``,
    ``items_path`` as in :class:`~attnrec.data.InteractionDataModule`) with graded feedback in the ``rating`` field
    (map it: ``columns={'rating': 'listens'}``), plus a social network from ``social_path``
    (CSV/TSV/Parquet, columns ``user`` and ``friend``, renamed by ``social_columns``).

    ``weighting`` turns a training interaction's feedback into its loss weight: ``log``
    (``log1p(count)``, the default: a 10,000-listen artist should not drown out fifty
    others), ``linear`` (the count) or ``none`` (no weights; no ``rating`` field needed).
    Feedback must be positive. A user-item pair listed several times in training weighs the
    sum of its counts. ``unknown_users``, ``duplicate_edges`` and ``symmetric`` are the social
    file's policy (see :mod:`attnrec_social.social`; self-loops are always refused).

    ``cold_share > 0`` simulates cold users, for measuring cold start on more users than a data
    set's few natural ones: a seeded random ``cold_share`` of the users with more than
    ``cold_keep`` training interactions keep ``cold_keep`` of them, chosen at random (the rest
    leave the data: they neither train nor test); their test lists are unchanged.
    ``simulated_cold`` lists them (internal ids). Every model trained on the data module sees
    the same reduced training graph.

    Defaults to the graph-CF protocol (random 80/10/10 split per user, one BPR negative); the
    other arguments are :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(
        self,
        path: str | None = None,
        social_path: str | None = None,
        columns: dict[str, str] | None = None,
        social_columns: dict[str, str] | None = None,
        social_sep: str | None = None,
        weighting: Weighting = "log",
        unknown_users: Policy = "error",
        duplicate_edges: Policy = "error",
        symmetric: bool = True,
        cold_share: float = 0.0,
        cold_keep: int = 5,
        split: SplitName = "ratio",
        num_negatives: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(path=path, columns=columns, split=split, num_negatives=num_negatives, **kwargs)
        self.save_hyperparameters(ignore=["table"])
        if weighting not in ("log", "linear", "none"):
            raise ValueError(f"weighting={weighting!r}; choose 'log', 'linear' or 'none'")
        self.social_path, self.social_columns, self.social_sep = social_path, social_columns, social_sep
        if not 0.0 <= cold_share < 1.0 or cold_keep < 1:
            raise ValueError(f"cold_share={cold_share} must be in [0, 1) and cold_keep={cold_keep} at least 1")
        self.weighting = weighting
        self.cold_share, self.cold_keep = cold_share, cold_keep
        self._simulated_cold = np.zeros(0, dtype=np.int64)
        self.unknown_users, self.duplicate_edges, self.symmetric = unknown_users, duplicate_edges, symmetric
        self.social_stats: SocialStats | None = None
        self._feedback: np.ndarray | None = None
        self._pair_weights: tuple[np.ndarray, np.ndarray] | None = None
        self._social_catalog: SocialCatalog | None = None

    # ------------------------------------------------------------ reading
    def load(self) -> Loaded:
        """:meth:`read_interactions`, keeping each row's feedback for the weights."""
        loaded = self.read_interactions()
        self._feedback = self.feedback(loaded)
        return loaded

    def read_interactions(self) -> Loaded:
        """The interactions, with the ``rating`` field kept when weights need it (subclasses
        with another format override this)."""
        if self.table is None and self.path is None:
            raise ValueError(f"{type(self).__name__}: give path= (an interactions file) or table= (a table)")
        columns = dict(self.columns or {})
        if self.weighting != "none":
            columns.setdefault("rating", "rating")
        source = self.table if self.table is not None else self.path
        # the item table (artist names, ...) names its item column as the interactions do
        item_column = {"item": columns["item"]} if "item" in columns else None
        items = read_table(self.items_path, item_column, required=("item",), extra=True) if self.items_path else None
        return Loaded(read_table(source, columns, sep=self.sep), items)

    def social_table(self) -> SocialTable:
        """The raw social file (subclasses with another format override this)."""
        if self.social_path is None:
            raise ValueError(f"{type(self).__name__}: give social_path= (a file of 'user friend' pairs)")
        return read_social_table(self.social_path, self.social_columns, self.social_sep)

    def feedback(self, loaded: Loaded) -> np.ndarray | None:
        """Each loaded row's feedback (listen count), checked positive and finite; None without
        weights."""
        if self.weighting == "none":
            return None
        counts = as_columns(loaded.interactions, ["rating"])["rating"].astype(np.float64)
        bad = ~(counts > 0)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{self.row_label(index)}, field 'rating': {float(counts[index])!r} is not a positive count; listen "
                "counts weigh the loss and must be > 0 (drop the row, or pass weighting='none')"
            )
        return counts

    def row_label(self, index: int) -> str:
        """Where the ``index``-th loaded interaction is: a delimited file's line (the header is
        line 1), else its 1-based row."""
        if self.path is None or self.table is not None:
            return f"{self.name}, row {index + 1}"
        if Path(self.path).suffix.lower() in (".parquet", ".pq", ".json", ".jsonl"):
            return f"{self.path}, row {index + 1}"
        return f"{self.path}, line {index + 2}"

    # --------------------------------------------------------------- split
    def split_positions(self, users: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        """Which interactions (positions in ``users``) train, validate and test: the base's
        split with positions in place of item ids (the splitters never look at the items)."""
        return InteractionDataModule.build_split(self, users, np.arange(len(users)), times, rows)

    def build_split(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        """:meth:`split_positions`, turned into items, and the training pairs' weights."""
        positions = self.split_positions(users, times, rows)
        if self.cold_share:
            self.simulate_cold(positions.train)
        if self._feedback is not None:
            train = np.concatenate(positions.train)
            keys = users[train].astype(np.int64) * (len(self.item_map) + 1) + items[train]
            unique, inverse = np.unique(keys, return_inverse=True)
            total = np.bincount(inverse, weights=self._feedback[rows[train]])
            weight = {"log": np.log1p, "linear": lambda x: x}[self.weighting](total)
            self._pair_weights = (unique, weight.astype(np.float32))
        return Split(*([items[p] for p in part] for part in (positions.train, positions.val, positions.test)))

    def simulate_cold(self, train: list[np.ndarray]) -> None:
        """Cut a seeded random ``cold_share`` of the users with more than ``cold_keep`` training
        interactions down to ``cold_keep`` of them, in place (see the class docstring)."""
        rng = np.random.default_rng([self.seed, 7])
        eligible = np.asarray([u for u in range(1, len(train)) if len(train[u]) > self.cold_keep], dtype=np.int64)
        chosen = np.sort(rng.choice(eligible, int(round(self.cold_share * len(eligible))), replace=False))
        for user in chosen:
            keep = np.sort(rng.choice(len(train[user]), self.cold_keep, replace=False))
            train[user] = train[user][keep]
        self._simulated_cold = chosen

    @property
    def simulated_cold(self) -> np.ndarray:
        """The internal ids of the users :meth:`simulate_cold` cut down (empty without it)."""
        self.catalog  # noqa: B018 - reads the data on first use
        return self._simulated_cold

    # ------------------------------------------------------------- catalog
    @property
    def catalog(self) -> SocialCatalog:
        if self._social_catalog is None:
            base = super().catalog
            edges, self.social_stats = social_graph(
                self.social_table(), self.user_map, self.unknown_users, self.duplicate_edges, self.symmetric
            )
            self._social_catalog = SocialCatalog(base, edges, list(self.user_map.raw))
        return self._social_catalog

    def pair_weight(self, users: Tensor, items: Tensor) -> Tensor:
        """The training weight of each (user, item) pair, 0 for pairs that are not training
        interactions (padding)."""
        assert self._pair_weights is not None
        keys, weights = self._pair_weights
        query = (users.long() * (self.num_items + 1) + items.long()).numpy()
        position = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
        found = keys[position] == query
        return torch.as_tensor(np.where(found, weights[position], 0.0), dtype=torch.float32)

    def collate_fn(self, stage: str) -> Callable[[list[dict]], Batch]:
        """Training batches get ``target_weight [B, L]`` from the listen counts."""
        collate = super().collate_fn(stage)
        if stage != "train" or self.weighting == "none":
            return collate
        return functools.partial(_add_weights, collate, self.pair_weight)

    @property
    def protocol(self) -> dict[str, str]:
        protocol = dict(super().protocol)
        self.catalog  # noqa: B018 - reads the social file, which sets social_stats
        stats = self.social_stats
        if stats is not None:
            protocol["social"] = f"{stats.edges} directed edges, {stats.users_with_friends} users with friends"
        protocol["weights"] = {"log": "log1p(listens)", "linear": "listens", "none": "none"}[self.weighting]
        if self.cold_share:
            protocol["cold simulation"] = (
                f"{len(self._simulated_cold)} users ({self.cold_share:g} of those with more) keep {self.cold_keep} "
                f"random training interactions (seed {self.seed})"
            )
        return protocol


def _add_weights(collate: Callable[[list[dict]], Batch], weight: Callable[[Tensor, Tensor], Tensor], examples: list[dict]) -> Batch:
    batch = collate(examples)
    users = batch["user"].unsqueeze(1).expand_as(batch["target"])
    batch["target_weight"] = weight(users, batch["target"]) * (batch["target"] != 0)
    return batch


class LastFMSocialDataModule(SocialDataModule):
    """Last.fm (hetrec2011-lastfm-2k) in the LightGCN authors' fixed split: ``folder`` holds
    ``data1.txt`` (train) and ``test1.txt`` (test), tab-separated ``user artist listen_count``
    without a header, and ``trustnetwork.txt`` (``user friend``, each friendship listed both
    ways). The files are the split: there is no validation part, so validation runs on the
    test lists (do not select checkpoints by it). The published network names 12 users who
    have no listening in the split, so ``unknown_users`` defaults to ``drop`` here (a warning
    counts them). Other arguments are :class:`SocialDataModule`'s and
    :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(self, folder: str, unknown_users: Policy = "drop", **kwargs: Any) -> None:
        super().__init__(
            path=str(Path(folder) / "data1.txt"), social_path=str(Path(folder) / "trustnetwork.txt"),
            unknown_users=unknown_users, split="temporal", val_ratio=0.0, test_ratio=0.0, **kwargs,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["table", "path", "social_path", "columns", "social_columns", "split", "val_ratio", "test_ratio"])
        self.folder = folder
        self.train_lines = 0

    @property
    def name(self) -> str:
        return "lastfm(LightGCN split)"

    def read_interactions(self) -> Loaded:
        """Train lines get time 0 and test lines time 1 (see :meth:`split_positions`)."""
        frames = []
        for time, file in enumerate(("data1.txt", "test1.txt")):
            path = Path(self.folder) / file
            table = read_table(
                path, {"rating": "rating"}, sep="\t", header=False, names=("user", "item", "rating"), integer_ids=True
            ).to_pandas()
            frames.append(table.assign(timestamp=float(time)))
        self.train_lines = len(frames[0])
        return Loaded(pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False))

    def social_table(self) -> SocialTable:
        return read_social_table(Path(self.folder) / "trustnetwork.txt", header=False, sep="\t")

    def row_label(self, index: int) -> str:
        train_lines = self.train_lines
        if index < train_lines:
            return f"{Path(self.folder) / 'data1.txt'}, line {index + 1}"
        return f"{Path(self.folder) / 'test1.txt'}, line {index - train_lines + 1}"

    def split_positions(self, users: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        """The given split: lines of ``data1.txt`` train, lines of ``test1.txt`` test."""
        positions = np.arange(len(users))
        train, test = times == 0, times == 1
        empty = [np.zeros(0, dtype=np.int64)] * (len(self.user_map) + 1)
        num_users = len(self.user_map)
        return Split(
            sequences(users[train], positions[train], times[train], num_users), empty,
            sequences(users[test], positions[test], times[test], num_users),
        )  # fmt: skip

    def eval_lists(self, stage: str, targets: list[np.ndarray] | None = None) -> EvalLists:
        """Validation runs on the test lists (the files have no validation part)."""
        return super().eval_lists("test", targets)

    @property
    def protocol(self) -> dict[str, str]:
        protocol = dict(super().protocol)
        protocol["split"] = "given files (train: data1.txt; test: test1.txt)"
        return protocol


class SocialSampleDataModule(SocialDataModule):
    """The bundled seeded sample (``attnrec_social/data/``, written by
    :func:`attnrec_social.sample.generate`): listeners in taste communities whose friends are
    mostly in their own community, some of them cold (3-6 artists), listen counts higher for
    their community's artists. Nothing to download; graph-CF protocol by default, with 20 %
    of each user's artists for test so that cold users (3-6 artists) have test lists. Other
    arguments are :class:`SocialDataModule`'s and :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(self, val_ratio: float = 0.1, test_ratio: float = 0.2, **kwargs: Any) -> None:
        super().__init__(
            path=str(SAMPLE / "listens.csv"), social_path=str(SAMPLE / "friends.csv"),
            columns={"item": "artist", "rating": "listens"}, val_ratio=val_ratio, test_ratio=test_ratio, **kwargs,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["table", "path", "social_path", "columns"])

    @property
    def name(self) -> str:
        return "social-sample(seed=0)"
