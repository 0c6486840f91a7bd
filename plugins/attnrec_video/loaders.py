"""Published video data sets (KuaiRec, MicroLens) and the bundled sample, as WatchDataModules.

Published files are downloaded once into ``$ATTNREC_DATA`` (default ``~/.cache/attnrec``)
through :func:`attnrec.data.download.fetch`: KuaiRec's archive is checked against the MD5 that
its Zenodo record publishes; MicroLens publishes no digests, so the SHA-256 of the first
download is recorded and enforced afterwards (with a warning). ``root=`` points at files you
already have and skips the download.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from attnrec.data import DataFormatError
from attnrec.data.download import cache_root, fetch
from attnrec.data.interactions import SplitName

from .data import WatchDataModule, WatchLog, numbers, pick_column, read_frame
from .sample import generate_videos

KUAIREC_URL = "https://zenodo.org/records/18164998/files/KuaiRec.zip"
KUAIREC_MD5 = "261550d472c48eff4990fb13c0e5bcf7"  # published on the Zenodo record
KUAIREC_COLUMNS = ("user_id", "video_id", "play_duration", "video_duration", "timestamp", "watch_ratio")
MICROLENS_URL = "https://recsys.westlake.edu.cn/MicroLens-{variant}-Dataset/{name}"
MICROLENS_FILES = {
    "50k": ("MicroLens-50k_pairs.csv", "MicroLens-50k_titles.csv", None),
    "100k": ("MicroLens-100k_pairs.csv", "MicroLens-100k_title_en.csv", "tags_to_summary.csv"),
}


def _find(root: Path, name: str) -> Path | None:
    """``name`` directly under ``root`` or anywhere below it (archives nest their folders)."""
    direct = root / name
    if direct.exists():
        return direct
    return next(iter(sorted(root.rglob(name))), None)


class KuaiRecDataModule(WatchDataModule):
    """KuaiRec 2.0 (Gao et al., CIKM 2022; CC BY-SA 4.0): Kuaishou watch logs with play and
    video durations, ``watch_ratio``, and up to four category tags per video (``feat``).

    ``matrix="small"`` is the fully observed 1,411 x 3,327 block (every user saw every video,
    so watch ratio, not presence, is the signal: consider ``min_watch_ratio``); ``"big"`` is the
    sparse 7,176-user log. Rows without a timestamp (KuaiRec leaves a few empty) are dropped and
    counted in the protocol's filtering. KuaiRec has no titles or visual/audio vectors: give
    your own through ``embeddings_path``. Defaults to the global temporal split; the other
    arguments are :class:`~attnrec_video.data.WatchDataModule`'s and
    :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(
        self,
        root: str | None = None,
        matrix: Literal["small", "big"] = "small",
        download: bool = True,
        split: SplitName = "temporal",
        **kwargs: Any,
    ) -> None:
        if matrix not in ("small", "big"):
            raise ValueError(f"KuaiRecDataModule: matrix={matrix!r}; choose 'small' or 'big'")
        super().__init__(split=split, **kwargs)
        self.save_hyperparameters()
        self.root, self.matrix, self.download = root, matrix, download

    @property
    def name(self) -> str:
        return f"KuaiRec-{self.matrix}"

    def _files(self) -> tuple[Path, Path | None]:
        wanted = f"{self.matrix}_matrix.csv"
        if self.root is not None:
            root = Path(self.root)
            if not root.exists():
                raise FileNotFoundError(f"KuaiRecDataModule: root={root} does not exist; point it at KuaiRec's data folder")
            log = _find(root, wanted)
            if log is None:
                raise FileNotFoundError(
                    f"KuaiRecDataModule: no {wanted} under {root}; point root at the folder holding KuaiRec's "
                    "data/ files, or leave root unset to download them"
                )
            return log, _find(root, "item_categories.csv")
        folder = cache_root() / "kuairec"
        if _find(folder, wanted) is None:
            if not self.download:
                raise FileNotFoundError(f"KuaiRecDataModule: {wanted} is not in {folder} and download=False")
            archive = fetch(KUAIREC_URL, folder, md5=KUAIREC_MD5)
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if Path(member).name in (wanted, "item_categories.csv"):
                        zf.extract(member, folder)
        log = _find(folder, wanted)
        assert log is not None, f"{KUAIREC_URL} did not contain {wanted}"
        return log, _find(folder, "item_categories.csv")

    def read(self) -> WatchLog:
        log_path, items_path = self._files()
        return read_kuairec(log_path, items_path)


def read_kuairec(log_path: Path, items_path: Path | None) -> WatchLog:
    """KuaiRec's ``*_matrix.csv`` (+ ``item_categories.csv``) as a canonical :class:`WatchLog`."""
    label = str(log_path)
    raw = read_frame(log_path)
    missing = [c for c in KUAIREC_COLUMNS if c not in raw.columns]
    if missing:
        raise DataFormatError(
            f"{label}: not a KuaiRec matrix file; missing columns {missing} (found: {', '.join(map(str, raw.columns))}). "
            f"KuaiRec's small_matrix.csv/big_matrix.csv have {', '.join(KUAIREC_COLUMNS)}, time, date"
        )
    timestamp = numbers(raw["timestamp"], label, "timestamp", allow_missing=True)
    for column in ("play_duration", "video_duration", "watch_ratio"):
        numbers(raw[column], label, column)  # validated with the file's line numbers before any row is dropped
    keep = ~np.isnan(timestamp)
    dropped = int((~keep).sum())
    raw = raw[keep].reset_index(drop=True)
    log = pd.DataFrame(
        {
            "user": raw["user_id"],
            "item": raw["video_id"],
            "timestamp": timestamp[keep],
            "watch_ratio": raw["watch_ratio"],
            "duration": pd.to_numeric(raw["video_duration"]) / 1000.0,  # KuaiRec stores milliseconds
        }
    )
    for column, source in (("user", "user_id"), ("item", "video_id")):
        ids = pd.to_numeric(log[column], errors="coerce")
        bad = ids.isna() | (ids != np.floor(ids))
        if bool(bad.any()):
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(f"{label}, column {source!r}: {log[column].iloc[row]!r} is not an integer id")
        log[column] = ids.astype(np.int64)
    items = None
    if items_path is not None:
        table = read_frame(items_path)
        if "video_id" not in table.columns or "feat" not in table.columns:
            raise DataFormatError(
                f"{items_path}: expected KuaiRec's item_categories.csv columns 'video_id', 'feat' "
                f"(found: {', '.join(map(str, table.columns))})"
            )
        items = pd.DataFrame({"item": table["video_id"], "tags": table["feat"]})
    filtering = f"dropped {dropped} rows without timestamp" if dropped else "none"
    # dropping rows shifts file lines; errors after this point name the kept row instead
    return WatchLog(log, items, label, str(items_path or "video table"), filtering, first_line=2)


class MicroLensDataModule(WatchDataModule):
    """MicroLens (Ni et al., 2023): micro-video clicks with English titles (and, for 100k,
    category summaries as tags). The pairs files have no watch time, so relevance is 1 for
    every watch; visual/audio vectors come from ``embeddings_path`` (MicroLens ships raw
    covers and videos, not embeddings). The other arguments are
    :class:`~attnrec_video.data.WatchDataModule`'s and :class:`~attnrec.data.SequenceDataModule`'s."""

    def __init__(
        self,
        root: str | None = None,
        variant: Literal["50k", "100k"] = "100k",
        download: bool = True,
        **kwargs: Any,
    ) -> None:
        if variant not in MICROLENS_FILES:
            raise ValueError(f"MicroLensDataModule: variant={variant!r}; choose from {', '.join(MICROLENS_FILES)}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.root, self.variant, self.download = root, variant, download

    @property
    def name(self) -> str:
        return f"MicroLens-{self.variant}"

    def _file(self, name: str | None, required: bool) -> Path | None:
        if name is None:
            return None
        if self.root is not None:
            found = _find(Path(self.root), name)
            if found is None and required:
                raise FileNotFoundError(f"MicroLensDataModule: no {name} under {self.root}; point root at the MicroLens folder")
            return found
        folder = cache_root() / f"microlens-{self.variant}"
        if (folder / name).exists():
            return fetch(MICROLENS_URL.format(variant=self.variant, name=name), folder)
        if not self.download:
            if required:
                raise FileNotFoundError(f"MicroLensDataModule: {name} is not in {folder} and download=False")
            return None
        return fetch(MICROLENS_URL.format(variant=self.variant, name=name), folder)

    def read(self) -> WatchLog:
        pairs_name, titles_name, tags_name = MICROLENS_FILES[self.variant]
        pairs = self._file(pairs_name, required=True)
        assert pairs is not None
        return read_microlens(pairs, self._file(titles_name, required=False), self._file(tags_name, required=False))


def _two_columns(path: Path, value: str) -> pd.DataFrame:
    """MicroLens side files: ``item,<value>`` rows, with or without a header line."""
    frame = read_frame(path, header=False)
    if frame.shape[1] < 2:
        raise DataFormatError(f"{path}: expected two comma-separated columns (video id, {value}), found {frame.shape[1]}")
    frame = frame.iloc[:, :2].set_axis(["item", value], axis=1)
    if len(frame) and not str(frame["item"].iloc[0]).strip().isdigit():
        frame = frame.iloc[1:]  # a header line
    return frame


def read_microlens(pairs: Path, titles: Path | None, tags: Path | None) -> WatchLog:
    """MicroLens's ``*_pairs.csv`` (``user,item,timestamp``) and side files as a :class:`WatchLog`."""
    label = str(pairs)
    raw = read_frame(pairs)
    user = pick_column(raw, ("user", "userID", "user_id"), label, "user")
    item = pick_column(raw, ("item", "videoID", "item_id", "video_id"), label, "video id")
    time = pick_column(raw, ("timestamp", "time"), label, "timestamp")
    log = raw[[user, item, time]].set_axis(["user", "item", "timestamp"], axis=1)
    items = None
    for path, column in ((titles, "title"), (tags, "tags")):
        if path is None:
            continue
        side = _two_columns(path, column)
        if column == "tags":
            side["tags"] = side["tags"].astype(str).str.split(r"\s*[,;|]\s*")
        items = side if items is None else items.merge(side, on="item", how="outer")
    return WatchLog(log, items, label, str(titles or tags or "video table"))


class VideoSampleDataModule(WatchDataModule):
    """The bundled video sample (:func:`~attnrec_video.sample.generate_videos`): planted content
    clusters, watch ratios and missing modalities, with 10% of the videos held out as cold
    items by default. Runs offline in seconds; what the tests and the tutorial train on. The
    other arguments are :class:`~attnrec_video.data.WatchDataModule`'s and
    :class:`~attnrec.data.SequenceDataModule`'s."""

    def __init__(
        self,
        num_users: int = 800,
        num_items: int = 400,
        num_clusters: int = 10,
        generator_seed: int = 0,
        cold_items: float = 0.1,
        max_len: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(cold_items=cold_items, max_len=max_len, **kwargs)
        self.save_hyperparameters()
        self.generator_args = dict(num_users=num_users, num_items=num_items, num_clusters=num_clusters, seed=generator_seed)

    @property
    def name(self) -> str:
        return f"video-sample(seed={self.generator_args['seed']})"

    def read(self) -> WatchLog:
        log, items = generate_videos(**self.generator_args)
        return WatchLog(log, items, self.name, self.name)
