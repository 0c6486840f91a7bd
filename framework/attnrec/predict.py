"""Prediction files: every user's top-k with raw ids, written by ``attnrec predict``.

:class:`TopKWriter` is a Lightning ``BasePredictionWriter``: it turns what
``Recommender.predict_step`` returns (internal user ids, item ids, scores) into rows
``user, rank, item, score`` (+ ``title`` when the catalogue has titles) with the data's raw ids,
and writes them once, at the end of the epoch, as Parquet or CSV (chosen by the file's
extension). Under DDP every process writes its shard beside the file, and process 0 merges
the shards in user order into the one file and removes them, so the result does not depend on
the number of processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

INDEX = "_user_index"  # internal user id, kept in DDP shards to merge them in order
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
DEFAULT_NAME = "predictions.parquet"


def file_format(path: str | os.PathLike[str]) -> str:
    """``"parquet"`` or ``"csv"`` by the file's extension; another extension is refused, naming
    the ones that work."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: prediction files are .parquet (or .pq) or .csv; got {suffix or 'no extension'!r}")
    return FORMATS[suffix]


def write_table(table: Any, path: str | os.PathLike[str]) -> None:
    """A pyarrow table to Parquet or CSV by extension, through a temporary file so a reader
    never sees half a file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if file_format(path) == "parquet":
        pq.write_table(table, partial)
    else:
        pacsv.write_csv(table, partial)
    os.replace(partial, path)


def read_table(path: str | os.PathLike[str]) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    return pq.read_table(path) if file_format(path) == "parquet" else pacsv.read_csv(path)


def _raw(values: Sequence[Any] | None, ids: np.ndarray) -> list[Any]:
    """Raw ids for internal ids (the internal id itself without a map)."""
    if not values:
        return ids.tolist()
    return [values[i] for i in ids.tolist()]


def prediction_table(
    users: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    user_ids: Sequence[Any] | None,
    item_ids: Sequence[Any] | None,
    titles: Sequence[str] | None = None,
) -> Any:
    """Rows ``user, rank, item, score (, title)`` for internal ``users [B]``, ``items [B, k]``,
    ``scores [B, k]``; list ends (item 0, fewer than k items left) are dropped."""
    import pyarrow as pa

    k = items.shape[1] if items.ndim == 2 else 0
    keep = (items != 0).reshape(-1)
    user_col = np.repeat(users, k)[keep]
    rank_col = np.tile(np.arange(1, k + 1), len(users))[keep]
    item_col = items.reshape(-1)[keep]
    columns: dict[str, Any] = {
        "user": pa.array(_raw(user_ids, user_col)),
        "rank": pa.array(rank_col, type=pa.int32()),
        "item": pa.array(_raw(item_ids, item_col)),
        "score": pa.array(scores.reshape(-1)[keep], type=pa.float32()),
    }
    if titles:
        columns["title"] = pa.array([titles[i] for i in item_col.tolist()], type=pa.string())
    return pa.table(columns)


class TopKWriter(BasePredictionWriter):
    """Writes every predicted user's top-k to ``path`` (Parquet, or CSV by extension) with raw
    user and item ids.

    Args:
        path: the file; default ``predictions.parquet`` in the run folder (``trainer.log_dir``).
        k: list length; default what ``predict_step`` returns (the model's largest ``ks``). A
            longer list is recomputed through ``recommend`` for each batch.
        exclude_seen: leave out the items each user already has (the default, as in
            ``recommend``); with False every batch is recomputed with seen items kept.
    """

    def __init__(self, path: str | None = None, k: int | None = None, exclude_seen: bool = True) -> None:
        super().__init__(write_interval="batch_and_epoch")
        if path is not None:
            file_format(path)
        if k is not None and k < 1:
            raise ValueError(f"TopKWriter: k must be at least 1, got {k}")
        self.path = path
        self.k = k
        self.exclude_seen = exclude_seen
        self.written: Path | None = None
        self._parts: list[dict[str, np.ndarray]] = []

    def output_path(self, trainer: Trainer) -> Path:
        if self.path is not None:
            return Path(self.path)
        return Path(trainer.log_dir or trainer.default_root_dir) / DEFAULT_NAME

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._parts = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        items, scores = prediction["items"], prediction["scores"]
        if (self.k is not None and self.k > items.shape[1]) or not self.exclude_seen:
            items, scores = pl_module.recommend(batch, k=self.k or items.shape[1], exclude_seen=self.exclude_seen)
        k = self.k or items.shape[1]
        self._parts.append(
            {
                "user": prediction["user"].cpu().numpy(),
                "items": items[:, :k].cpu().numpy(),
                "scores": scores[:, :k].float().cpu().numpy(),
            }
        )

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        """Each process writes its rows to a shard; process 0 merges the shards in user order."""
        target = self.output_path(trainer)
        if trainer.world_size > 1:  # every process must agree on the file: take process 0's
            target = Path(trainer.strategy.broadcast(str(target), src=0))
        table = self._table(pl_module, trainer)
        if trainer.world_size == 1:
            write_table(table.drop_columns([INDEX]), target)
        else:
            shard = shard_path(target, trainer.global_rank)
            write_table(table, shard)
            trainer.strategy.barrier("attnrec_prediction_shards")
            if trainer.is_global_zero:
                merge_shards([shard_path(target, rank) for rank in range(trainer.world_size)], target)
            trainer.strategy.barrier("attnrec_prediction_merged")
        self.written = target
        self._parts = []
        if trainer.is_global_zero:
            print(f"predictions: {target}")

    def _table(self, pl_module: LightningModule, trainer: Trainer) -> Any:
        import pyarrow as pa

        catalog = pl_module.catalog
        user_ids = _user_ids(trainer)
        k = self.k or (self._parts[0]["items"].shape[1] if self._parts else 1)
        users = np.concatenate([p["user"] for p in self._parts]) if self._parts else np.zeros(0, np.int64)
        items = np.concatenate([p["items"] for p in self._parts]) if self._parts else np.zeros((0, k), np.int64)
        scores = np.concatenate([p["scores"] for p in self._parts]) if self._parts else np.zeros((0, k), np.float32)
        order = np.argsort(users, kind="stable")
        table = prediction_table(
            users[order], items[order], scores[order], user_ids, catalog.raw_ids, catalog.titles or None
        )
        users = np.repeat(users[order], k)[items[order].reshape(-1) != 0]
        return table.append_column(INDEX, pa.array(users, type=pa.int64()))


def _user_ids(trainer: Trainer) -> Sequence[Any] | None:
    """The data's raw user ids by internal id (through the same state checkpoints keep)."""
    from .data.serving import serving_state

    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return None
    state = getattr(datamodule, "serving_state", None) or serving_state(datamodule)
    return state["user_ids"] if state else None


def shard_path(target: Path, rank: int) -> Path:
    """A process's shard beside the target; always Parquet, so ids keep their type (a CSV
    read back would turn ``007`` into 7)."""
    return target.with_name(f".{target.stem}.rank{rank}.parquet")


def merge_shards(shards: Sequence[Path], target: Path) -> None:
    """One file from the processes' shards, sorted by (internal user id, rank) as one process
    writes it, the internal id column dropped and the shards removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(shard) for shard in shards]
    merged = pa.concat_tables(tables, promote_options="permissive").sort_by([(INDEX, "ascending"), ("rank", "ascending")])
    write_table(merged.drop_columns([INDEX]), target)
    for shard in shards:
        shard.unlink(missing_ok=True)


