"""The generic interaction data module; data-set loaders subclass it and override ``load``."""

from __future__ import annotations

import os
import warnings
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Sampler

from ..interfaces import Batch, ItemCatalog, RecDataModule
from .interactions import IdMap, Split, SplitName, k_core_codes, radix_sort, split
from .sequences import Batching, Collate, EvalLists, LengthGroupedSampler, NegativeSampler, Sampling, TrainWindows
from .tables import DataFormatError, Distinct, read_table, to_arrow

if TYPE_CHECKING:  # accepted as input only
    import datasets

Duplicates = Literal["drop", "error", "keep"]


@dataclass
class Loaded:
    """What a loader returns: interactions plus optional per-item side information, each an
    Arrow table (a pandas DataFrame or HF ``datasets.Dataset`` is accepted too)."""

    interactions: pa.Table | pd.DataFrame | datasets.Dataset
    items: pa.Table | pd.DataFrame | datasets.Dataset | None = None  # columns: item (raw id), optional title, ...
    filtering: str = "none"


class SequenceDataModule(RecDataModule):
    """What every interaction data set shares: id maps, k-core filtering, the split, training
    windows, samplers and loaders. Subclasses read their source in :meth:`load` and forward
    these arguments with ``**kwargs`` (jsonargparse resolves them for the CLI), restating only
    those whose default they change.

    Ids are mapped to ``1..N`` in sorted raw-id order. ``duplicates`` says what becomes of an
    interaction that repeats an earlier one exactly (same user, item and timestamp; without a
    timestamp column the order is the time, so none does): ``drop`` (the default) keeps the
    first with a warning that counts the dropped ones, ``error`` refuses the data, ``keep``
    keeps them all (a repeated last interaction then leaks the test target into validation and
    history). ``k_core`` filters iteratively, after duplicates are dropped; ``split``
    is ``loo`` (leave-one-out by time), ``temporal`` (global time cut-offs) or ``ratio`` (random
    per user). ``eval_negatives > 0`` switches evaluation from full ranking to that many
    sampled negatives per list (the paper protocol; numbers are not comparable with full ranking).
    ``batching="length"`` (the default) pads each batch to its longest history and groups
    training windows of similar length, so short-history data costs what its real items cost;
    ``"fixed"`` pads every history to ``max_len`` (same scores, to float rounding; for
    comparison). ``num_negatives`` sampled items per training position feed sampled losses;
    ``shared_negatives=True`` draws them once per batch for every position instead, so a
    model scores them with one ``[M, D] x [D, K]`` product rather than gathering ``K`` item
    vectors per position (thousands of negatives stay cheap on a CPU; not with differential
    privacy).

    Extension points, all public so plugins never override the core's internals:
    :meth:`load` (read the source), :meth:`item_side` (catalog titles and features),
    :meth:`build_split` (which interactions train, validate and test), :meth:`eval_lists`
    (what evaluation asks for) and :meth:`collate_fn` (extra batch keys, in every loader and in
    :meth:`user_batch`, which serves ``recommend``). A subclass that fixes
    a base argument (passes it to ``super().__init__`` itself, hiding it from the CLI) drops it
    with ``self.save_hyperparameters(ignore=[...])``, so a checkpoint rebuilds it from its
    hyper-parameters.
    """

    def __init__(
        self,
        k_core: int = 0,
        duplicates: Duplicates = "drop",
        split: SplitName = "loo",
        val_ratio: float = 0.1,
        test_ratio: float = 0.1,
        max_len: int = 50,
        window_stride: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_negatives: int = 0,
        negative_sampling: Sampling = "uniform",
        shared_negatives: bool = False,
        eval_negatives: int = 0,
        eval_sampling: Sampling = "uniform",
        eval_mask_seen: bool = True,
        batching: Batching = "length",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # Lightning collects the arguments of every __init__ on the stack: a subclass's
        # in-memory table must not become a hyper-parameter.
        self.save_hyperparameters(ignore=["table"])
        self.k_core = k_core
        self.duplicates = duplicates
        self.split_name = split
        self.val_ratio, self.test_ratio = val_ratio, test_ratio
        self.max_len = max_len
        self.window_stride = window_stride or max_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_negatives, self.negative_sampling = num_negatives, negative_sampling
        self.shared_negatives = shared_negatives
        self.eval_negatives, self.eval_sampling = eval_negatives, eval_sampling
        self.eval_mask_seen = eval_mask_seen
        self.batching = batching
        self.num_workers = num_workers
        self.seed = seed
        self.train_batch_sampler: Callable[[TrainWindows], Sampler[list[int]]] | None = None
        """Chooses the training batches (window indices) instead of the shuffled or
        length-grouped order when set: :class:`attnrec.privacy.DifferentialPrivacy` sets it to
        draw users by Poisson sampling, one window each, as its privacy accounting assumes."""
        self._prepared = False

    @abstractmethod
    def load(self) -> Loaded:
        """Read the raw tables (loaders for named data sets download here)."""

    def _prepare(self) -> None:
        """Load, filter, map ids, split (:meth:`build_split`) and build the catalog, once."""
        if self._prepared:
            return
        loaded = self.load()
        table = to_arrow(loaded.interactions)
        users, items = _ids(table.column("user")), _ids(table.column("item"))
        for name, ids in (("user", users), ("item", items)):
            if (ids.codes < 0).any():
                row = int(np.argmax(ids.codes < 0)) + 1
                raise DataFormatError(f"{self.name}, row {row}: no {name} id; drop the row")
        if "timestamp" in table.column_names:
            times = table.column("timestamp").to_numpy().astype(np.float64)
        else:
            times = np.arange(table.num_rows, dtype=np.float64)
        rows = self._first_of_duplicates(users, items, times)
        user_codes, item_codes, times = users.codes[rows], items.codes[rows], times[rows]
        filtering = loaded.filtering
        if self.k_core > 1:
            kept = k_core_codes(user_codes, item_codes, self.k_core)
            rows, user_codes, item_codes, times = rows[kept], user_codes[kept], item_codes[kept], times[kept]
            filtering = f"{self.k_core}-core" + ("" if filtering == "none" else f" after {filtering}")
            if len(rows) == 0:
                raise DataFormatError(f"{self.k_core}-core filtering left no interactions; lower k_core")
        self.user_map, user_ids = IdMap.of_codes(user_codes, users.values, "user")
        self.item_map, item_ids = IdMap.of_codes(item_codes, items.values, "item")
        self.split_data: Split = self.build_split(user_ids, item_ids, times, rows)
        train = self.split_data.train
        trained = np.concatenate(train)
        popularity = np.bincount(trained, minlength=len(self.item_map) + 1)
        edge_users = np.repeat(np.arange(len(train)), [len(seq) for seq in train])
        self._catalog = ItemCatalog(
            num_items=len(self.item_map),
            popularity=torch.as_tensor(popularity, dtype=torch.float32),
            raw_ids=list(self.item_map.raw),
            num_users=len(self.user_map),
            train_edges=torch.as_tensor(np.stack([edge_users, trained])),
            **self.item_side(None if loaded.items is None else to_arrow(loaded.items)),
        )
        self._filtering = filtering
        self.num_interactions = len(user_ids)
        self._prepared = True

    def _first_of_duplicates(self, users: Distinct, items: Distinct, times: np.ndarray) -> np.ndarray:
        """Rows of the loaded table left by the ``duplicates`` policy (found on the id codes)."""
        rows = np.arange(len(times))
        if self.duplicates == "keep":
            return rows
        repeated = _repeated(users.codes.astype(np.int64) * len(items.values) + items.codes, times)
        count = int(repeated.sum())
        if count == 0:
            return rows
        first = int(np.flatnonzero(repeated)[0])
        user, item = (str(ids.values[ids.codes[first]].as_py()) for ids in (users, items))
        example = f"user {user!r}, item {item!r} at time {float(times[first])!r}"
        if self.duplicates == "error":
            raise DataFormatError(
                f"{self.name}: {count} interactions repeat an earlier one exactly (same user, item and timestamp), "
                f"e.g. {example}; remove them from the data, or pass duplicates='drop' to drop them with a warning"
            )
        warnings.warn(
            f"{self.name}: dropped {count} interactions that repeat an earlier one exactly (same user, item and "
            f"timestamp; the first is kept), e.g. {example}; pass duplicates='error' to refuse such data, or "
            "'keep' to keep them",
            stacklevel=3,
        )
        return rows[~repeated]

    def build_split(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        """The train/validation/test split of the interactions left after k-core filtering, as
        internal ids (``item_map``, ``user_map``, ``num_items`` and ``num_users`` are set);
        ``rows`` is each one's row in the loaded table, to align per-interaction values a
        subclass read in :meth:`load`.

        The catalog's ``popularity`` and ``train_edges`` are built from the returned split's
        training part, so a subclass that holds interactions out of every part (the video
        plugin's cold items) overrides this and calls ``super().build_split`` on the rest.
        """
        return split(users, items, times, len(self.user_map), self.split_name, self.val_ratio, self.test_ratio, self.seed)

    def item_side(self, items: pa.Table | None) -> dict[str, Any]:
        """``titles`` and ``features`` for the catalog from the item table, by internal id
        (called after :meth:`build_split`; subclasses add features to
        ``super().item_side(items)``). Float columns stay numbers (missing = 0), other columns
        become integer codes ``1..V`` with 0 for padding and missing values. Items absent from
        the interactions are dropped; a repeated item keeps its first row."""
        if items is None:
            return {}
        frame = items.to_pandas().drop_duplicates("item", keep="first")
        known = frame["item"].isin(self.item_map.raw[1:]).to_numpy()
        frame = frame[known]
        rows = self.item_map.encode(frame["item"].to_numpy())
        side: dict[str, Any] = {"features": {}}
        if "title" in frame.columns:
            titles = [""] * (len(self.item_map) + 1)
            for row, title in zip(rows, frame["title"].fillna("").astype(str)):
                titles[row] = title
            side["titles"] = titles
        for column in frame.columns:
            if column in ("item", "title"):
                continue
            values = frame[column]
            if pd.api.types.is_float_dtype(values):
                feature = torch.zeros(len(self.item_map) + 1, dtype=torch.float32)
                feature[torch.as_tensor(rows)] = torch.tensor(values.fillna(0.0).to_numpy(), dtype=torch.float32)
            else:
                present = ~(values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
                if not present.any():  # e.g. no brand in this release's metadata: no feature
                    continue
                feature = torch.zeros(len(self.item_map) + 1, dtype=torch.long)
                codes, _ = _codes(values[present])
                feature[torch.as_tensor(rows[present])] = torch.as_tensor(codes + 1)  # 0 = padding / unknown
            side["features"][column] = feature
        return side

    # ---------------------------------------------------------------- facts
    @property
    def num_items(self) -> int:
        if not hasattr(self, "item_map"):  # set before build_split/item_side, which may ask too
            self._prepare()
        return len(self.item_map)

    @property
    def num_users(self) -> int:
        if not hasattr(self, "user_map"):
            self._prepare()
        return len(self.user_map)

    @property
    def catalog(self) -> ItemCatalog:
        self._prepare()
        return self._catalog

    @property
    def protocol(self) -> dict[str, str]:
        self._prepare()
        split_desc = {
            "loo": "leave-one-out by time",
            "temporal": f"global temporal (val {self.val_ratio:g}, test {self.test_ratio:g} of interactions)",
            "ratio": f"random per user (val {self.val_ratio:g}, test {self.test_ratio:g}, seed {self.seed})",
        }[self.split_name]
        if self.eval_negatives:
            candidates = f"sampled ({self.eval_negatives} {self.eval_sampling} negatives, seen excluded)"
        else:
            seen = "seen masked" if self.eval_mask_seen else "seen NOT masked, as RecBole's sequential full sort"
            candidates = f"full ({self.num_items} items, {seen})"
        return {
            "data": self.name,
            "split": split_desc,
            "candidates": candidates,
            "max_len": str(self.max_len),
            "filtering": self._filtering,
        }

    @property
    def name(self) -> str:
        return type(self).__name__

    def _user_index(self, user: Any) -> int:
        self._prepare()
        return self.user_map.index(user, where=self.name)

    def _all_items(self, index: int) -> np.ndarray:
        s = self.split_data
        return np.concatenate([s.train[index], s.val[index], s.test[index]])

    def user_history(self, user: Any) -> torch.Tensor:
        return torch.as_tensor(self._all_items(self._user_index(user)))

    def user_batch(self, users: Sequence[Any]) -> Batch:
        """Next-item requests for raw user ids after all their known interactions, collated by
        ``collate_fn("predict")`` (so a subclass's batch keys reach ``recommend`` too)."""
        if len(users) == 0:
            raise ValueError(f"{self.name}: user_batch needs at least one user id")
        examples = []
        for user in users:
            index = self._user_index(user)
            items = self._all_items(index)
            examples.append({"user": index, "history": items[-self.max_len :], "seen": items})
        return self.collate_fn("predict")(examples)

    # -------------------------------------------------------------- loaders
    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    def _sampler(self, mode: Sampling) -> NegativeSampler:
        return NegativeSampler(self.num_items, mode, self._catalog.popularity.numpy())

    def collate_fn(self, stage: str) -> Callable[[list[dict]], Batch]:
        """What turns examples into a batch for ``stage`` ('train', 'val', 'test' or 'predict',
        also :meth:`user_batch`): :class:`Collate`, with training negatives for 'train'.
        Subclasses wrap it to add batch keys (the video plugin adds watch-ratio weights)."""
        self._prepare()
        pad = "longest" if self.batching == "length" else "max_len"
        if stage == "train":
            sampler = self._sampler(self.negative_sampling) if self.num_negatives else None
            return Collate(self.max_len, self.num_negatives, sampler, pad=pad, shared=self.shared_negatives)
        return Collate(self.max_len, pad=pad)

    def train_dataloader(self) -> DataLoader:
        self._prepare()
        windows = TrainWindows(self.split_data.train, self.max_len, self.window_stride)
        if len(windows) == 0:
            raise DataFormatError(f"{self.name}: no user has two training interactions; nothing to train on")
        if self.train_batch_sampler is not None:
            return DataLoader(
                windows,
                batch_sampler=self.train_batch_sampler(windows),
                collate_fn=self.collate_fn("train"),
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        grouped = self.batching == "length"
        return DataLoader(
            windows,
            batch_size=self.batch_size,
            shuffle=not grouped,
            sampler=LengthGroupedSampler(windows.lengths, self.batch_size) if grouped else None,
            collate_fn=self.collate_fn("train"),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_lists(self, stage: str, targets: list[np.ndarray] | None = None) -> EvalLists:
        """The ranking lists of ``stage`` ('val' or 'test'): users with targets and a history.
        ``targets`` (index = internal user id) replaces the split's val/test items as what to
        find; a subclass that asks for other items (held-out cold videos) passes them here and
        keeps the histories, sampling and masking of every other list."""
        self._prepare()
        s = self.split_data
        if targets is None:
            targets = s.val if stage == "val" else s.test
        users, histories, wanted = [], [], []
        for user in range(1, self.num_users + 1):
            history = s.history(user, stage)
            if len(targets[user]) and len(history):
                users.append(user), histories.append(history), wanted.append(targets[user])
        sampler = self._sampler(self.eval_sampling) if self.eval_negatives else None
        seed = self.seed * 2 + (stage == "test")
        return EvalLists(
            np.asarray(users, dtype=np.int64), histories, wanted, self.max_len, self.eval_negatives, sampler, seed,
            mask_seen=self.eval_mask_seen, by_length=self.batching == "length",
        )

    def _eval_loader(self, dataset: torch.utils.data.Dataset, stage: str) -> DataLoader:
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's default DistributedSampler pads with duplicates; this one does not,
            # so every list is counted exactly once across processes.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            collate_fn=self.collate_fn(stage),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.eval_lists("val"), "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.eval_lists("test"), "test")

    def predict_dataloader(self) -> DataLoader:
        """Every user with a history, for next-item recommendations after all known interactions."""
        self._prepare()
        users = [u for u in range(1, self.num_users + 1) if len(self._all_items(u))]
        histories = [self._all_items(u) for u in users]
        empty = [np.zeros(0, dtype=np.int64)] * len(users)
        lists = EvalLists(
            np.asarray(users, dtype=np.int64), histories, empty, self.max_len, by_length=self.batching == "length"
        )
        return self._eval_loader(lists, "predict")


def _repeated(pairs: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Which rows repeat an earlier row's (pair, time), as ``DataFrame.duplicated`` finds them,
    in a fraction of its time on a large log: an int64 that mixes the two, sorted (3x faster than
    hashing 20M of them), finds the few rows that may repeat one, and only those are compared
    exactly."""
    bits = (times + 0.0).view(np.int64)  # equal times, equal bits (+ 0.0 turns -0.0 into 0.0)
    mixed, order = radix_sort(pairs * np.int64(-7046029254386353131) ^ bits)  # wraps around, as intended
    same = mixed[1:] == mixed[:-1]
    twice = np.zeros(len(pairs), dtype=bool)  # equal to the next or the previous one
    twice[:-1] = same
    twice[1:] |= same
    maybe = np.sort(order[twice])
    repeated = np.zeros(len(pairs), dtype=bool)
    repeated[maybe] = pd.DataFrame({"pair": pairs[maybe], "time": times[maybe]}).duplicated().to_numpy()
    return repeated


def _ids(column: pa.ChunkedArray) -> Distinct:
    """An id column as codes into its distinct ids: a dictionary column's own codes
    (``read_table(dictionary_ids=True)`` encoded the ids already; hashing 20M of them again
    costs seconds); here the order of the distinct ids does not matter."""
    if pa.types.is_dictionary(column.type) and column.num_chunks == 1 and not column.chunk(0).dictionary.null_count:
        array = column.chunk(0)
        codes = array.indices if not array.indices.null_count else pc.fill_null(array.indices, -1)
        return Distinct(codes.to_numpy(), array.dictionary).renamed(array.dictionary)  # one id, one code
    return Distinct.of(column)


def _codes(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes ``0..V-1`` of a column's values (sorted), and the values."""
    uniques, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes, uniques


class InteractionDataModule(SequenceDataModule):
    """Interactions from a local file (CSV/TSV/Parquet/JSON Lines) or a table in memory (an Arrow
    table, pandas DataFrame or ``datasets.Dataset``), with an optional item table (``item`` plus
    ``title`` and feature columns)."""

    def __init__(
        self,
        path: str | None = None,
        columns: dict[str, str] | None = None,
        sep: str | None = None,
        items_path: str | None = None,
        table: pa.Table | pd.DataFrame | datasets.Dataset | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["table"])
        self.path = path
        self.columns = columns
        self.sep = sep
        self.items_path = items_path
        self.table = table

    def load(self) -> Loaded:
        if self.table is not None:
            return Loaded(read_table(self.table, self.columns, dictionary_ids=True))
        if self.path is None:
            raise ValueError(f"{type(self).__name__}: give path= (an interactions file) or table= (a table)")
        # the item table names its item column as the interactions do
        item_column = {"item": self.columns["item"]} if self.columns and "item" in self.columns else None
        items = read_table(self.items_path, item_column, required=("item",), extra=True) if self.items_path else None
        return Loaded(read_table(self.path, self.columns, sep=self.sep, dictionary_ids=True), items)

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else type(self).__name__
