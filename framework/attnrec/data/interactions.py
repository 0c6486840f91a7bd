"""From a table to id-mapped, time-ordered per-user sequences and their split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .tables import plain_id

SplitName = Literal["loo", "temporal", "ratio"]


class IdMap:
    """Raw ids <-> contiguous ids ``1..n`` (0 is padding).

    Ids are numbered in sorted order of the raw values, never in order of appearance, so the
    mapping does not depend on the split or on time (an item first seen in the test period is
    not always the largest id). Lookups hash (a ``pandas.Index``): sorting every raw value, or
    a binary search per value over Python strings, cost seconds per million string ids.
    """

    def __init__(self, raw: Sequence[Any] | np.ndarray, kind: str = "id") -> None:
        self.kind = kind  # what the ids name ("user", "item"), for errors
        _, uniques = pd.factorize(np.asarray(raw))
        values = np.sort(np.asarray(uniques))
        self.raw: list[Any] = [None] + values.tolist()
        self._lookup = pd.Index(values)

    @classmethod
    def of_codes(cls, codes: np.ndarray, values: pa.Array | np.ndarray, kind: str = "id") -> tuple[IdMap, np.ndarray]:
        """The map of the ``values`` that ``codes`` (row codes into those distinct values) use,
        and each row's contiguous id: the hashing and sorting is per distinct value, not per row."""
        distinct = values.to_numpy(zero_copy_only=False) if isinstance(values, pa.Array) else np.asarray(values)
        used = np.bincount(codes, minlength=len(distinct)) > 0
        id_map = cls(distinct[used], kind)
        ids = np.zeros(len(distinct), dtype=np.int64)
        ids[used] = id_map.encode(distinct[used])
        return id_map, ids[codes]

    def __len__(self) -> int:
        return len(self.raw) - 1

    def encode(self, raw: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Contiguous ids of raw ones; a raw id the map does not hold raises ``KeyError`` (a
        wrong id would silently attach one item's data to another)."""
        raw = np.asarray(raw)
        ids = self._lookup.get_indexer(raw)
        unknown = ids < 0
        if unknown.any():
            shown = ", ".join(repr(plain_id(v)) for v in pd.unique(raw[unknown])[:5])
            raise KeyError(f"{int(unknown.sum())} {self.kind} ids are not among the {len(self)} known {self.kind}s, e.g. {shown}")
        return ids + 1

    def index(self, raw: Any, where: str = "the data") -> int:
        """The contiguous id of a raw one; an unknown one raises ``KeyError`` naming ``where``."""
        # configs and command lines give ids as strings, spelled as the user likes (" 1.0")
        for candidate in (raw, _maybe_int(raw), str(raw), plain_id(str(raw)), _maybe_int(plain_id(str(raw)))):
            try:
                return int(self._lookup.get_loc(candidate)) + 1
            except (KeyError, TypeError, pd.errors.InvalidIndexError):
                continue
        raise KeyError(f"{self.kind} {raw!r} is not in {where} ({len(self)} {self.kind}s)") from None


def _maybe_int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions left after iteratively dropping users and items with
    fewer than ``k`` interactions (until none is left below ``k``).

    Ids are hashed to integer codes once, then every round is two ``bincount``s: re-sorting the
    raw (string) ids each round made this the slowest step of loading a large log."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    user_codes, user_values = pd.factorize(np.asarray(users))
    item_codes, item_values = pd.factorize(np.asarray(items))
    while True:
        user_counts = np.bincount(user_codes[keep], minlength=len(user_values))
        item_counts = np.bincount(item_codes[keep], minlength=len(item_values))
        kept = keep & (user_counts[user_codes] >= k) & (item_counts[item_codes] >= k)
        if kept.sum() == keep.sum():
            return keep
        keep = kept


@dataclass
class Split:
    """Per-user item sequences (index = internal user id; entry 0 unused), each time-ordered."""

    train: list[np.ndarray]
    val: list[np.ndarray]
    test: list[np.ndarray]

    def history(self, user: int, stage: str) -> np.ndarray:
        """What the model may see when predicting ``stage`` targets for ``user``."""
        if stage == "val":
            return self.train[user]
        return np.concatenate([self.train[user], self.val[user]])


def sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray, num_users: int) -> list[np.ndarray]:
    """Items of each user ordered by time (ties keep file order: Arrow's sort is stable, and
    faster than ``np.lexsort``)."""
    order = pc.sort_indices(pa.table({"user": users, "time": times}), [("user", "ascending"), ("time", "ascending")])
    order = order.to_numpy()
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(num_users + 2))
    return [items[bounds[u] : bounds[u + 1]] for u in range(num_users + 1)]


def split(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    num_users: int,
    how: SplitName,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    seed: int = 0,
) -> Split:
    """``loo``: per user, the last interaction is test and the one before it validation (users
    with fewer than 3 interactions only train). ``temporal``: global time cut-offs leave the last
    ``test_ratio`` of all interactions for test and the ``val_ratio`` before them for
    validation. ``ratio``: per user, a seeded random ``val_ratio``/``test_ratio`` of the
    interactions are held out (the graph-CF protocol)."""
    empty = np.zeros(0, dtype=np.int64)
    if how == "loo":
        seqs = sequences(users, items, times, num_users)
        train, val, test = [], [], []
        for seq in seqs:
            if len(seq) < 3:
                train.append(seq), val.append(empty), test.append(empty)
            else:
                train.append(seq[:-2]), val.append(seq[-2:-1]), test.append(seq[-1:])
        return Split(train, val, test)
    if how == "temporal":
        order = np.sort(times)
        n = len(order)
        t_test = order[min(n - 1, int(np.floor(n * (1 - test_ratio))))]
        t_val = order[min(n - 1, int(np.floor(n * (1 - test_ratio - val_ratio))))]
        parts = []
        for lo, hi in ((-np.inf, t_val), (t_val, t_test), (t_test, np.inf)):
            m = (times >= lo) & (times < hi)
            parts.append(sequences(users[m], items[m], times[m], num_users))
        return Split(*parts)
    if how == "ratio":
        rng = np.random.default_rng(seed)
        seqs = sequences(users, items, times, num_users)
        train, val, test = [], [], []
        for seq in seqs:
            n = len(seq)
            n_test = int(round(n * test_ratio)) if n >= 3 else 0
            n_val = int(round(n * val_ratio)) if n >= 3 else 0
            n_test = min(n_test, max(n - 1, 0))
            n_val = min(n_val, max(n - 1 - n_test, 0))
            role = np.zeros(n, dtype=np.int8)
            picked = rng.permutation(n)
            role[picked[:n_test]] = 2
            role[picked[n_test : n_test + n_val]] = 1
            train.append(seq[role == 0]), val.append(seq[role == 1]), test.append(seq[role == 2])
        return Split(train, val, test)
    raise ValueError(f"unknown split {how!r}; choose 'loo', 'temporal' or 'ratio'")
