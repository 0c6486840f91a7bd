"""Watch logs with watch time, video tables with content vectors, and a cold-item split.

:class:`WatchDataModule` takes a watch log (``user, item, timestamp`` plus ``watch_ratio`` or
``watch_time`` + ``duration``) and a video table (``item, title, tags, duration, visual,
audio``) and puts everything a content encoder needs into the catalog's features
(:class:`VideoDataModule` reads both from local files, :mod:`attnrec_video.loaders` from
published data sets):

============================  =============================================================
``title_tokens [N+1, W]``     word codes of the title (0 = padding), ``has_title [N+1]``
``tags [N+1, T]``             tag codes (0 = padding), ``has_tags [N+1]``
``visual [N+1, Dv]``          precomputed visual embedding, ``has_visual [N+1]``
``audio [N+1, Da]``           precomputed audio embedding, ``has_audio [N+1]``
``duration_bucket [N+1]``     log-spaced duration bucket (0 = unknown), ``has_duration``
============================  =============================================================

Watch ratio reaches the model as graded relevance: training batches carry
``target_weight [B, L]`` and evaluation batches ``target_gain [B, T]`` (or
``candidate_gain [B, C]``), the ratio of that user's watch of that video clipped to
``[0, ratio_cap]`` (1 where the log has no watch time). ``cold_items`` holds a share of the
videos out of training and validation entirely; ``test_items`` then picks whether test lists
ask for the warm next video, the held-out cold videos, or both.
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import Tensor

from attnrec.data import DataFormatError, EvalLists, Loaded, SequenceDataModule, Split, read_table
from attnrec.data.interactions import sequences

TestItems = Literal["all", "warm", "cold"]
DURATION_EDGES = (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
ITEM_COLUMNS = ("title", "tags", "duration", "visual", "audio")
MODALITY_FEATURES = {
    "title": "title_tokens", "tags": "tags", "visual": "visual", "audio": "audio", "duration": "duration_bucket",
}  # fmt: skip
"""Catalog feature of each content modality; ``has_<modality>`` is its presence mask."""


# --------------------------------------------------------------------- relevance
class Relevance:
    """Graded relevance of (user, item) pairs: a sorted-key lookup, cheap to pickle into workers."""

    def __init__(self, users: np.ndarray, items: np.ndarray, values: np.ndarray, num_rows: int) -> None:
        self.num_rows = num_rows
        keys = users.astype(np.int64) * num_rows + items.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order].astype(np.float32)
        self.keys, start = np.unique(keys, return_index=True)
        # a rewatched video counts with its best watch
        self.values = np.maximum.reduceat(values, start) if len(values) else values

    def __call__(self, users: Tensor, items: Tensor) -> Tensor:
        """Relevance ``[B, X]`` of ``items [B, X]`` for ``users [B]``; 0 for padding and unknown pairs."""
        ids = items.numpy()
        keys = users.numpy()[:, None].astype(np.int64) * self.num_rows + ids
        if len(self.keys) == 0:
            return torch.zeros(items.shape)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = (self.keys[pos] == keys) & (ids != 0)
        return torch.as_tensor(np.where(found, self.values[pos], 0.0), dtype=torch.float32)


class WatchCollate:
    """Wraps the core collate and adds the relevance of every target (see the module docstring)."""

    def __init__(self, collate: Callable[[list[dict]], dict[str, Tensor]], relevance: Relevance) -> None:
        self.collate = collate
        self.relevance = relevance

    def __call__(self, examples: list[dict]) -> dict[str, Tensor]:
        batch = self.collate(examples)
        users = batch["user"]
        if "target" in batch:
            batch["target_weight"] = self.relevance(users, batch["target"])
        if "targets" in batch:
            batch["target_gain"] = self.relevance(users, batch["targets"])
        if "candidates" in batch:
            batch["candidate_gain"] = self.relevance(users, batch["candidates"]) * (batch["labels"] > 0)
        return batch


# ------------------------------------------------------------------ reading
@dataclass
class WatchLog:
    """What :meth:`WatchDataModule.read` returns: canonical frames and where they came from."""

    log: pd.DataFrame  # user, item, [timestamp], [watch_ratio | watch_time + duration]
    items: pd.DataFrame | None  # item, [title, tags, duration (s), visual, audio]
    label: str
    items_label: str = "video table"
    filtering: str = "none"
    first_line: int = 2  # file line of the log's first row, for error messages


def read_frame(path: str | Path, sep: str | None = None, header: bool = True) -> pd.DataFrame:
    """A CSV/TSV/Parquet/JSON Lines file as a DataFrame (CSV cells as strings)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
            return pd.read_json(path, lines=not name.endswith(".json"), dtype=False)
        sep = sep or ("\t" if name.endswith((".tsv", ".tsv.gz")) else ",")
        return pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: the file is empty; expected a header line and one row per line") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot be parsed ({exc}); check the separator (sep=...) and quoting") from exc


def numbers(values: pd.Series, label: str, column: str, first_line: int = 2, allow_missing: bool = False) -> np.ndarray:
    """A column as float64, with an error naming the file, line and column of the first bad cell."""
    blank = values.isna() | (values.astype(str).str.strip() == "")
    parsed = pd.to_numeric(values.where(~blank, None), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(parsed) & (~blank.to_numpy() | (not allow_missing))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{label}, line {row + first_line}, column {column!r}: {values.iloc[row]!r} is not a number; "
            "fix or drop the row"
        )
    negative = parsed < 0
    if negative.any():
        row = int(np.flatnonzero(negative)[0])
        raise DataFormatError(f"{label}, line {row + first_line}, column {column!r}: {values.iloc[row]!r} is negative")
    return parsed


def pick_column(frame: pd.DataFrame, candidates: Sequence[str], label: str, field: str) -> str:
    """The first of ``candidates`` that the frame has, else an error listing what it has."""
    for name in candidates:
        if name in frame.columns:
            return name
    raise DataFormatError(
        f"{label}: no {field} column (looked for {', '.join(map(repr, candidates))}); columns found: "
        f"{', '.join(map(str, frame.columns))}"
    )


def watch_ratio(frame: pd.DataFrame, label: str, first_line: int = 2) -> np.ndarray:
    """``watch_ratio``, else ``watch_time / duration``, else NaN (relevance unknown)."""
    if "watch_ratio" in frame.columns:
        return numbers(frame["watch_ratio"], label, "watch_ratio", first_line)
    if "watch_time" in frame.columns and "duration" in frame.columns:
        watched = numbers(frame["watch_time"], label, "watch_time", first_line)
        duration = numbers(frame["duration"], label, "duration", first_line)
        zero = duration <= 0
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            raise DataFormatError(
                f"{label}, line {row + first_line}, column 'duration': a video of length 0 has no watch ratio; "
                "drop the row or give its real duration"
            )
        return watched / duration
    if "watch_time" in frame.columns:
        raise DataFormatError(f"{label}: has 'watch_time' but no 'duration' column; the watch ratio needs both")
    return np.full(len(frame), np.nan)


def as_list(value: Any) -> list | None:
    """A list cell from Parquet/JSON (list, array) or CSV (``"a|b"``, ``"[1, 2]"``); None if empty."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value) if len(value) else None
    if isinstance(value, float) and np.isnan(value):
        return None
    text = str(value).strip().strip("[]")
    parts = [p.strip().strip("'\"") for p in re.split(r"[,|;\s]+", text) if p.strip().strip("'\"")]
    return parts or None


# ------------------------------------------------------------------ features
def title_tokens(titles: Sequence[str | None], max_words: int, vocab_size: int) -> tuple[Tensor, list[str]]:
    """Word codes ``[n, max_words]`` (most frequent words first, 0 = padding) and the vocabulary."""
    words = [re.findall(r"\w+", title.lower()) if title else [] for title in titles]
    counts = Counter(w for ws in words for w in ws)
    vocab = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]]
    index = {w: i + 1 for i, w in enumerate(vocab)}
    out = torch.zeros(len(titles), max_words, dtype=torch.long)
    for row, ws in enumerate(words):
        codes = [index[w] for w in ws if w in index][:max_words]
        out[row, : len(codes)] = torch.as_tensor(codes, dtype=torch.long)
    return out, vocab


def duration_buckets(seconds: np.ndarray, edges: Sequence[float]) -> Tensor:
    """Bucket ``1..len(edges)+1`` of each duration; 0 where it is unknown (NaN)."""
    buckets = np.searchsorted(np.asarray(edges, dtype=np.float64), np.nan_to_num(seconds), side="right") + 1
    return torch.as_tensor(np.where(np.isnan(seconds), 0, buckets), dtype=torch.long)


def stack_vectors(cells: Sequence[Any], rows: np.ndarray, num_rows: int, label: str, field: str) -> tuple[Tensor, Tensor]:
    """Vectors of a list column ``[num_rows, D]`` (zeros where absent) and their presence mask;
    a vector with NaN/inf (an embedding that failed) counts as absent."""
    present = torch.zeros(num_rows, dtype=torch.bool)
    vectors = [None if cell is None else np.asarray(cell, dtype=np.float32) for cell in cells]
    lengths = Counter(len(v) for v in vectors if v is not None)
    if not lengths:
        return torch.zeros(num_rows, 1), present
    dim = lengths.most_common(1)[0][0]
    out = torch.zeros(num_rows, dim)
    for position, (row, vector) in enumerate(zip(rows, vectors)):
        if vector is None:
            continue
        if len(vector) != dim:
            raise DataFormatError(
                f"{label}: video table row {position + 1} has a {field} vector of length {len(vector)}, the others "
                f"{dim}; every {field} embedding must have the same dimension"
            )
        if np.isfinite(vector).all():
            out[row], present[row] = torch.tensor(vector), True
    return out, present


# ------------------------------------------------------------------ data module
class WatchDataModule(SequenceDataModule):
    """What every watch-log data set shares (see the module docstring for the features and
    batch keys): subclasses return the log and video table from :meth:`read`;
    :class:`VideoDataModule` reads local files, the loaders of published data sets download.

    ``embeddings_path``: optional ``.npz`` with ``item`` ids and ``visual``/``audio`` matrices
    (a NaN row = missing). Split, window, sampling and loader arguments are
    :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(
        self,
        embeddings_path: str | None = None,
        cold_items: float = 0.0,
        test_items: TestItems = "all",
        min_watch_ratio: float = 0.0,
        ratio_cap: float = 2.0,
        duration_edges: Sequence[float] = DURATION_EDGES,
        max_title_words: int = 16,
        title_vocab: int = 20000,
        max_tags: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not 0.0 <= cold_items < 1.0:
            raise ValueError(f"{type(self).__name__}: cold_items={cold_items} must be in [0, 1) (a share of the videos)")
        if test_items not in ("all", "warm", "cold"):
            raise ValueError(f"{type(self).__name__}: test_items={test_items!r}; choose 'all', 'warm' or 'cold'")
        if test_items == "cold" and cold_items == 0:
            raise ValueError(f"{type(self).__name__}: test_items='cold' needs cold_items > 0 (a share of videos to hold out)")
        self.embeddings_path = embeddings_path
        self.cold_items, self.test_items = cold_items, test_items
        self.min_watch_ratio, self.ratio_cap = min_watch_ratio, ratio_cap
        self.duration_edges = tuple(duration_edges)
        self.max_title_words, self.title_vocab, self.max_tags = max_title_words, title_vocab, max_tags

    # ------------------------------------------------------------- reading
    @abstractmethod
    def read(self) -> WatchLog:
        """The watch log and video table in canonical columns."""

    def load(self) -> Loaded:
        watch_log = self.read()
        log, items, label, items_label = watch_log.log, watch_log.items, watch_log.label, watch_log.items_label
        if len(log) == 0:
            raise DataFormatError(f"{label}: no interactions (only a header, or empty); add at least one row")
        ratio = watch_ratio(log, label, watch_log.first_line)
        table = read_table(log, label=label, first_line=watch_log.first_line)  # validated before any row is dropped
        durations = numbers(log["duration"], label, "duration", watch_log.first_line) if "duration" in log.columns else None
        filtering = watch_log.filtering
        if self.min_watch_ratio > 0:
            keep = ~(ratio < self.min_watch_ratio)
            if not keep.any():
                raise DataFormatError(f"{label}: no watch reaches min_watch_ratio={self.min_watch_ratio}; lower it")
            table, ratio = table.take(np.flatnonzero(keep)), ratio[keep]
            durations = durations[keep] if durations is not None else None
            filtering = f"watch ratio >= {self.min_watch_ratio:g}" + ("" if filtering == "none" else f", {filtering}")
        self._watch_ratio = ratio  # one per row of the returned table, for build_split
        from_table = items is not None and bool({"visual", "audio"} & set(items.columns))
        self._vectors_label = items_label if from_table else str(self.embeddings_path or items_label)  # for errors
        item_ids = table.column("item").to_numpy()
        items_frame = self._complete_items(item_ids, durations, items, items_label)
        return Loaded(table, pa.Table.from_pandas(items_frame, preserve_index=False), filtering)

    def _complete_items(
        self, item_ids: np.ndarray, durations: np.ndarray | None, items: pd.DataFrame | None, label: str
    ) -> pd.DataFrame:
        """The video table in canonical columns, one row per video of the log, durations filled
        in from the log where the table lacks them, embeddings joined from ``embeddings_path``."""
        known = pd.Index(pd.unique(item_ids))
        if items is None:
            table = pd.DataFrame({"item": known})
        else:
            item_col = pick_column(items, ("item", "video_id", "item_id"), label, "video id")
            table = items.rename(columns={item_col: "item"})
            table["item"] = _like(table["item"], item_ids, label)
            table = table.drop_duplicates("item", keep="last")
            table = pd.DataFrame({"item": known}).merge(table, on="item", how="left")
        for column in ITEM_COLUMNS:
            if column not in table.columns:
                table[column] = None
        table["duration"] = numbers(table["duration"], label, "duration", allow_missing=True)
        if durations is not None:
            per_item = pd.Series(durations).groupby(item_ids).median()
            fill = table["item"].map(per_item).to_numpy(dtype=np.float64)
            table["duration"] = np.where(np.isnan(table["duration"]), fill, table["duration"])
        if self.embeddings_path:
            table = self._join_embeddings(table, item_ids)
        table["title"] = [t if isinstance(t, str) and t.strip() else None for t in table["title"]]
        table["tags"] = [as_list(t) for t in table["tags"]]
        table["tags"] = [[str(x) for x in t] if t else None for t in table["tags"]]
        for column in ("visual", "audio"):
            table[column] = [_vector(v, label, column, item) for v, item in zip(table[column], table["item"])]
        return table[["item", *ITEM_COLUMNS]]

    def _join_embeddings(self, table: pd.DataFrame, item_ids: np.ndarray) -> pd.DataFrame:
        path = Path(self.embeddings_path)  # type: ignore[arg-type]
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; embeddings_path must be an .npz with 'item' and 'visual'/'audio'")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if "item" not in arrays or not {"visual", "audio"} & set(arrays):
            raise DataFormatError(f"{path}: has arrays {sorted(arrays)}; expected 'item' and at least one of 'visual', 'audio'")
        ids = _like(pd.Series(arrays["item"]), item_ids, str(path)).to_numpy()
        position = {value: i for i, value in enumerate(ids.tolist())}
        for key in ("visual", "audio"):
            if key in arrays:
                matrix = arrays[key]
                if matrix.ndim != 2 or len(matrix) != len(ids):
                    raise DataFormatError(f"{path}: {key!r} must be a [{len(ids)}, D] matrix (one row per 'item'), got {matrix.shape}")
                table[key] = [matrix[position[i]] if i in position else None for i in table["item"].tolist()]
        return table

    # ------------------------------------------------------------- split and catalog
    def build_split(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray) -> Split:
        """Relevance from every kept watch; with ``cold_items``, a seeded share of the videos is
        held out of all three parts (so popularity and the training graph never count them) and
        kept as each user's cold targets."""
        relevance = np.clip(np.nan_to_num(self._watch_ratio[rows], nan=1.0), 0.0, self.ratio_cap)
        n, num_users = len(self.item_map), len(self.user_map)
        self.relevance = Relevance(users, items, relevance, n + 1)
        self._cold = torch.zeros(n + 1, dtype=torch.bool)
        self.cold_targets: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * (num_users + 1)
        if self.cold_items == 0:
            return super().build_split(users, items, times, rows)
        count = max(1, int(round(self.cold_items * n)))
        rng = np.random.default_rng([self.seed, 6])
        self._cold[torch.as_tensor(rng.choice(np.arange(1, n + 1), size=count, replace=False))] = True
        cold = self._cold.numpy()[items]
        self.cold_targets = [np.unique(s) for s in sequences(users[cold], items[cold], times[cold], num_users)]
        warm = ~cold
        return super().build_split(users[warm], items[warm], times[warm], rows[warm])

    def item_side(self, items: pa.Table | None) -> dict[str, Any]:
        """Titles, title tokens, tags, duration buckets and visual/audio vectors, each with its
        ``has_<modality>`` mask (replaces the core's generic columns: every loader fills the
        same canonical video table)."""
        assert items is not None  # load() always returns the completed video table
        frame = items.to_pandas()
        rows = self.item_map.encode(frame["item"].to_numpy())
        n = len(self.item_map) + 1
        features: dict[str, Tensor] = {}
        titles = [""] * n
        for row, title in zip(rows, frame["title"]):
            titles[row] = title if isinstance(title, str) else ""
        tokens, self.title_words = title_tokens(titles, self.max_title_words, self.title_vocab)
        features["title_tokens"], features["has_title"] = tokens, (tokens != 0).any(dim=1)
        tag_lists = [list(t) if t is not None and len(t) else [] for t in frame["tags"]]
        self.tag_names = sorted({t for tags in tag_lists for t in tags})
        code = {t: i + 1 for i, t in enumerate(self.tag_names)}
        tags = torch.zeros(n, self.max_tags, dtype=torch.long)
        for row, names in zip(rows, tag_lists):
            codes = [code[t] for t in names][: self.max_tags]
            tags[row, : len(codes)] = torch.as_tensor(codes, dtype=torch.long)
        features["tags"], features["has_tags"] = tags, (tags != 0).any(dim=1)
        seconds = np.full(n, np.nan)
        seconds[rows] = frame["duration"].to_numpy(dtype=np.float64)
        features["duration_bucket"] = duration_buckets(seconds, self.duration_edges)
        features["has_duration"] = features["duration_bucket"] != 0
        for key in ("visual", "audio"):
            features[key], features[f"has_{key}"] = stack_vectors(list(frame[key]), rows, n, self._vectors_label, key)
        return {"titles": titles, "features": features}

    # ------------------------------------------------------------- facts
    @property
    def cold(self) -> Tensor:
        """``[N+1]`` True for the videos held out as cold (never in training or validation)."""
        self.setup()  # idempotent: the split, and with it the cold videos, is built once
        return self._cold

    @property
    def protocol(self) -> dict[str, str]:
        protocol = dict(super().protocol)
        cold = int(self.cold.sum())
        if cold:
            held = f"{cold} cold videos ({cold / self.num_items:.0%}) held out of training and validation"
            protocol["items"] = {
                "all": f"test targets: warm next video + {held}",
                "warm": f"test targets: warm next video ({held}, removed from histories)",
                "cold": f"test targets: the {held}",
            }[self.test_items]
        protocol["relevance"] = f"watch ratio clipped to [0, {self.ratio_cap:g}]"
        return protocol

    # ------------------------------------------------------------- loaders
    def eval_lists(self, stage: str, targets: list[np.ndarray] | None = None) -> EvalLists:
        """Test lists ask for the held-out cold videos too (``test_items``), warm histories kept."""
        if targets is None and stage == "test" and self.test_items != "warm" and bool(self.cold.any()):
            test = self.split_data.test
            targets = self.cold_targets if self.test_items == "cold" else [np.concatenate(pair) for pair in zip(test, self.cold_targets)]
        return super().eval_lists(stage, targets)

    def collate_fn(self, stage: str) -> Callable[[list[dict]], dict[str, Tensor]]:
        """The core's collate plus watch-ratio relevance (:class:`WatchCollate`)."""
        return WatchCollate(super().collate_fn(stage), self.relevance)


class VideoDataModule(WatchDataModule):
    """A watch log and video table from local files (see the module docstring for the
    features and batch keys).

    ``path``: the watch log (``user, item, timestamp`` and ``watch_ratio`` or ``watch_time`` +
    ``duration``; rename with ``columns``). ``items_path``: the video table (Parquet or JSON
    Lines for vector columns; CSV tags as ``"a|b"``). Video, split, window, sampling and loader
    arguments are :class:`WatchDataModule`'s and :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(
        self,
        path: str | None = None,
        items_path: str | None = None,
        columns: dict[str, str] | None = None,
        sep: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.path, self.items_path, self.columns, self.sep = path, items_path, columns, sep

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else type(self).__name__

    def read(self) -> WatchLog:
        if self.path is None:
            raise ValueError(f"{type(self).__name__}: give path= (a watch log file)")
        columns = dict(self.columns or {})
        frame = read_frame(self.path, self.sep)
        renamed = frame.rename(columns={source: canonical for canonical, source in columns.items()})
        items = read_frame(self.items_path) if self.items_path else None
        return WatchLog(renamed, items, str(self.path), str(self.items_path or "video table"))


def _like(values: pd.Series, reference: np.ndarray, label: str) -> pd.Series:
    """Video ids of a side table in the type of the log's ids (CSV reads both as strings)."""
    if np.issubdtype(np.asarray(reference).dtype, np.integer):
        parsed = pd.to_numeric(values, errors="coerce")
        if bool(parsed.isna().any()):
            row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise DataFormatError(f"{label}, row {row + 1}: video id {values.iloc[row]!r} is not an integer like the log's ids")
        return parsed.astype(np.int64)
    return values.astype(str)


def _vector(value: Any, label: str, field: str, item: Any) -> np.ndarray | None:
    cells = as_list(value)
    if cells is None:
        return None
    try:
        return np.asarray(cells, dtype=np.float32)
    except ValueError:
        raise DataFormatError(
            f"{label}: column {field!r} of video {item!r} holds non-numbers ({cells[:3]!r}...); give a list of floats"
        ) from None
