"""What serving needs from the data, kept in the checkpoint so ``attnrec recommend`` never
reads the training data: the users' raw ids by internal id and each user's known items as a
CSR (``indptr [U + 2]``, ``indices``), plus the history length and the data's name. Items'
raw ids and titles travel in the catalog.

Re-reading the data at serving time would let rows appended since training change the
answers, break on relative paths from another folder, and let a crafted checkpoint point at
any file; a checkpoint holds tensors and plain lists only (``weights_only``-safe).
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np
import torch

from ..interfaces import Batch, ItemCatalog
from .sequences import Collate

_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def serving_state(datamodule: Any) -> dict[str, Any] | None:
    """The serving data of a data module that maps users (a public ``user_map``, as
    ``SequenceDataModule`` and ``MINDDataModule`` have) and answers ``user_history(raw_id)``
    (``RecDataModule``'s contract: the items ``recommend`` starts from, oldest first); None
    for one that does not. Computed once per data module (checkpoints are saved every epoch)."""
    if datamodule in _CACHE:
        return _CACHE[datamodule]
    user_map = getattr(datamodule, "user_map", None)
    if user_map is None or not hasattr(datamodule, "user_history"):
        return None
    raw = list(user_map.raw)
    histories = [np.zeros(0, dtype=np.int64)] + [np.asarray(datamodule.user_history(user)) for user in raw[1:]]
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    dtype = np.int32 if int(getattr(datamodule, "num_items", 0)) < 2**31 - 1 else np.int64
    indices = np.concatenate(histories).astype(dtype) if len(histories) else np.zeros(0, dtype)
    max_len = getattr(datamodule, "max_len", None)
    state = {
        "user_ids": [_plain(user) for user in raw],
        "history_indptr": torch.from_numpy(indptr),
        "history_indices": torch.from_numpy(indices),
        "max_len": int(max_len) if max_len is not None else None,
        "name": str(getattr(datamodule, "name", type(datamodule).__name__)),
    }
    _CACHE[datamodule] = state
    return state


class ServingData:
    """Request batches from a checkpoint's serving state and catalog alone.

    Batches are what ``SequenceDataModule.user_batch`` gives (its ``Collate``): ``user [B]``,
    ``history [B, max_len]`` left-padded with the latest items and ``seen [B, S]``, everything
    the user has (excluded from the recommendations). Raw ids are looked up as given, then as
    an integer, then as a string, as the data modules do (command lines give strings)."""

    def __init__(self, state: dict[str, Any] | None, catalog: ItemCatalog, max_len: int | None = None) -> None:
        self.state = state
        self.catalog = catalog
        self.name = state["name"] if state else "the checkpoint"
        self.max_len = (state or {}).get("max_len") or max_len
        self._users = {user: i for i, user in enumerate(state["user_ids"]) if i} if state else {}
        self._items = {item: i for i, item in enumerate(catalog.raw_ids) if i}

    @staticmethod
    def _find(table: dict[Any, int], raw: Any) -> int | None:
        for candidate in (raw, _maybe_int(raw), str(raw)):
            if candidate in table:
                return table[candidate]
        return None

    def user_index(self, user: Any) -> int:
        if self.state is None:
            raise KeyError(f"user {user!r}: the checkpoint holds no users' histories")
        index = self._find(self._users, user)
        if index is None:
            raise KeyError(f"user {user!r} is not in {self.name} ({len(self._users)} users)")
        return index

    def item_index(self, item: Any) -> int:
        index = self._find(self._items, item)
        if index is None:
            raise KeyError(f"item {item!r} is not in the checkpoint's catalogue ({self.catalog.num_items} items)")
        return index

    def history(self, index: int) -> np.ndarray:
        assert self.state is not None
        indptr = self.state["history_indptr"]
        return self.state["history_indices"][int(indptr[index]) : int(indptr[index + 1])].numpy().astype(np.int64)

    def user_batch(self, users: Sequence[Any]) -> Batch:
        """Requests for raw user ids after all their known interactions."""
        return self._batch([self.user_index(user) for user in users], None)

    def history_batch(self, histories: Sequence[Sequence[Any]]) -> Batch:
        """Requests for given histories of raw item ids, oldest first (an unknown user: 0)."""
        items = [np.asarray([self.item_index(item) for item in history], dtype=np.int64) for history in histories]
        return self._batch([0] * len(items), items)

    def _batch(self, users: list[int], histories: list[np.ndarray] | None) -> Batch:
        if histories is None:
            histories = [self.history(user) for user in users]
        max_len = self.max_len or max(1, max(len(h) for h in histories))
        return Collate(max_len)(
            [{"user": user, "history": items[-max_len:], "seen": items} for user, items in zip(users, histories)]
        )


def _maybe_int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
