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
from torch.utils.data import DataLoader

from ..interfaces import Batch, ItemCatalog, RecDataModule
from .sequences import Collate, EvalLists

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


class CheckpointDataModule(RecDataModule):
    """The users a checkpoint knows, as a data module: ``attnrec predict --ckpt_path X`` uses
    it when no data is named, so prediction files come from the checkpoint alone (every user
    with a history, after all their known interactions, as ``recommend`` builds them).

    It predicts only; training and evaluation need the interactions and their split."""

    def __init__(self, ckpt_path: str, batch_size: int = 256) -> None:
        super().__init__()
        from ..checkpoints import CheckpointError, read_checkpoint

        state = read_checkpoint(ckpt_path, check=False)  # the model's load verifies the checksum
        if "attnrec_catalog" not in state:
            raise CheckpointError(f"{ckpt_path}: holds no item catalogue (not written by attnrec fit)")
        if state.get("attnrec_serving") is None:
            raise CheckpointError(
                f"{ckpt_path}: holds no users' histories (saved without a data module, or by an older attnrec); "
                "name the data to predict for: --config the run's config.yaml"
            )
        self.ckpt_path = ckpt_path
        self.batch_size = batch_size
        self._catalog = ItemCatalog.from_state(state["attnrec_catalog"])
        self.serving = ServingData(state["attnrec_serving"], self._catalog)
        self.max_len = self.serving.max_len

    @property
    def catalog(self) -> ItemCatalog:
        return self._catalog

    @property
    def protocol(self) -> dict[str, str]:
        return {"data": f"{self.serving.name} (from {self.ckpt_path})"}

    @property
    def serving_state(self) -> dict[str, Any]:
        """The checkpoint's serving state (raw user ids by internal id, histories)."""
        assert self.serving.state is not None
        return self.serving.state

    def user_history(self, user: Any) -> torch.Tensor:
        return torch.as_tensor(self.serving.history(self.serving.user_index(user)))

    def user_batch(self, users: Sequence[Any]) -> Batch:
        return self.serving.user_batch(users)

    def predict_dataloader(self) -> DataLoader:
        """Every user with a history, shortest first (little padding); under DDP split without
        repeats, so no user is written twice."""
        indptr = self.serving_state["history_indptr"]
        users = (indptr[1:] > indptr[:-1]).nonzero().flatten().numpy()
        users = users[users > 0]
        histories = [self.serving.history(int(user)) for user in users]
        empty = [np.zeros(0, dtype=np.int64)] * len(users)
        lists = EvalLists(users.astype(np.int64), histories, empty, self.max_len or 1, by_length=True)
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(lists, shuffle=False)
        return DataLoader(
            lists, batch_size=self.batch_size, sampler=sampler, collate_fn=Collate(self.max_len or 1, pad="longest")
        )


def _maybe_int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
