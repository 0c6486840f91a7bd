"""Amazon review data (McAuley lab, 2014 / 2018 / 2023 releases) as time-ordered interactions.

Formats read, plain or gzipped (detected from the bytes, not the name):

* **2014 / 2018 reviews** (``reviews_<Cat>_5.json.gz``, ``<Cat>_5.json.gz``): one object per line
  with ``reviewerID``, ``asin``, ``overall`` and ``unixReviewTime`` (seconds). The 2014 files,
  their metadata above all, are "loose JSON" (Python literals with single quotes): each line is
  parsed as JSON and, failing that, with :func:`ast.literal_eval`, as the publishers advise.
* **2023 reviews** (``<Cat>.jsonl``): ``user_id``, ``parent_asin`` (the item), ``rating`` and
  ``timestamp`` in milliseconds (converted to seconds here).
* **Ratings-only CSV** (``ratings_<Cat>.csv``, ``<Cat>.csv``): ``user,item,rating,timestamp`` with
  no header; a header line ``user_id,parent_asin,rating,timestamp`` (2023's benchmark files,
  timestamps in ms) is recognised.
* **Metadata** (``meta_<Cat>.json[l].gz``): ``asin``/``parent_asin`` -> ``title``, a main
  category (2023 ``main_category``, 2018 ``main_cat``, 2014 the second level of ``categories``),
  brand (2023 ``store``) and price, into the catalog as ``titles`` and the features
  ``category``, ``brand`` (integer codes, 0 = unknown) and ``price`` (float, 0 = unknown).

The McAuley lab publishes no checksums: downloads are trusted on first use (their SHA-256 is
recorded and enforced afterwards, see :mod:`attnrec.data.download`).
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import re
from pathlib import Path
from typing import IO, Any, Iterator, Literal

import pandas as pd
import pyarrow as pa

from .datamodule import Loaded, SequenceDataModule
from .download import cache_root, fetch
from .tables import DataFormatError, parse_delimited, read_table

Version = Literal["2014", "2018", "2023"]
Kind = Literal["reviews", "ratings"]

_SNAP = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_UCSD = "https://datarepo.eng.ucsd.edu/mcauley_group/data"
URLS: dict[tuple[str, str], str] = {
    ("2014", "reviews"): _SNAP + "/reviews_{category}_5.json.gz",
    ("2014", "ratings"): _SNAP + "/ratings_{category}.csv",
    ("2018", "reviews"): _UCSD + "/amazon_v2/categoryFilesSmall/{category}_5.json.gz",
    ("2018", "ratings"): _UCSD + "/amazon_v2/categoryFilesSmall/{category}.csv",
    ("2023", "reviews"): _UCSD + "/amazon_2023/raw/review_categories/{category}.jsonl.gz",
}
METADATA_URLS: dict[str, str] = {
    "2014": _SNAP + "/meta_{category}.json.gz",
    "2018": _UCSD + "/amazon_v2/metaFiles2/meta_{category}.json.gz",
    "2023": _UCSD + "/amazon_2023/raw/meta_categories/meta_{category}.jsonl.gz",
}
# review fields by release: user, item, rating, timestamp, and the timestamp's unit in seconds
_OLD = ("reviewerID", "asin", "overall", "unixReviewTime", 1.0)
_NEW = ("user_id", "parent_asin", "rating", "timestamp", 1e-3)


class AmazonReviewsDataModule(SequenceDataModule):
    """Amazon reviews of one category: every review (or rating) is an interaction.

    With no ``path`` the ``version``'s file for ``category`` (the publisher's spelling, e.g.
    ``Beauty`` in 2014, ``Luxury_Beauty`` in 2018, ``All_Beauty`` in 2023) is downloaded into
    ``root`` (default: the attnrec cache): ``kind='reviews'`` is the 5-core review file for 2014
    and 2018 and the full review file for 2023 (apply ``k_core=5`` yourself);
    ``kind='ratings'`` the ratings-only CSV (2014, 2018). ``metadata`` also downloads the item
    metadata (large for big categories); with ``path``, give ``metadata_path`` instead.
    ``min_rating`` keeps only ratings at or above it (implicit-feedback reading). Reviews
    repeated verbatim (same user, item and time, present in the 2014/2018 files) count once;
    the protocol's filtering field says how many were dropped.

    Split, window, sampling and loader arguments are :class:`SequenceDataModule`'s.
    """

    def __init__(
        self,
        category: str | None = None,
        version: Version = "2018",
        kind: Kind = "reviews",
        root: str | None = None,
        path: str | None = None,
        metadata_path: str | None = None,
        metadata: bool = True,
        min_rating: float | None = None,
        **kwargs: Any,
    ) -> None:
        if path is None:
            if category is None:
                raise ValueError("AmazonReviewsDataModule: give category= (to download) or path= (a local file)")
            if (version, kind) not in URLS:
                known = ", ".join(f"version={v!r} kind={k!r}" for v, k in URLS)
                raise ValueError(f"no Amazon {kind} file is published for version {version!r}; available: {known}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.category, self.version, self.kind = category, version, kind
        self.root, self.source, self.metadata_path = root, path, metadata_path
        self.metadata, self.min_rating = metadata, min_rating

    @property
    def name(self) -> str:
        if self.source is not None:
            return os.path.basename(self.source)
        return f"amazon{self.version}-{self.category}"

    def load(self) -> Loaded:
        folder = Path(self.root) if self.root else cache_root() / "amazon" / self.version
        meta: Path | None = None
        if self.source is None:
            reviews = fetch(URLS[(self.version, self.kind)].format(category=self.category), folder)
            if self.metadata:
                meta = fetch(METADATA_URLS[self.version].format(category=self.category), folder)
        else:
            reviews = _existing(self.source, "reviews or ratings file")
        if self.metadata_path is not None:
            meta = _existing(self.metadata_path, "metadata file")
        frame = read_reviews(reviews).to_pandas()
        steps = (
            ["5-core by the publisher"]
            if self.source is None and URLS[(self.version, self.kind)].endswith("_5.json.gz")
            else []
        )
        unique = frame.drop_duplicates(["user", "item", "timestamp"])
        if len(unique) < len(frame):  # the 2014/2018 files repeat some reviews verbatim
            steps.append(f"{len(frame) - len(unique)} duplicate reviews dropped")
            frame = unique
        if self.min_rating is not None:
            frame = frame[frame["rating"] >= self.min_rating]
            if len(frame) == 0:
                raise DataFormatError(f"{reviews}: no rating is >= min_rating={self.min_rating:g}; lower it")
            steps.append(f"rating >= {self.min_rating:g}")
        interactions = pa.Table.from_pandas(frame, preserve_index=False)
        filtering = ", ".join(steps) or "none"
        items = read_metadata(meta, set(frame["item"])) if meta is not None else None
        return Loaded(interactions, items, filtering)


def _existing(path: str, what: str) -> Path:
    location = Path(os.path.expanduser(path))
    if not location.is_file():
        raise FileNotFoundError(f"{location}: no such file; pass an Amazon {what}")
    return location


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line: JSON, else a Python literal (loose JSON)."""
    with _open(path) as handle:
        for number, raw in enumerate(handle, 1):
            text = raw.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except ValueError:
                try:
                    record = ast.literal_eval(text.decode("utf-8", errors="replace"))
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    raise DataFormatError(
                        f"{path}, line {number}: neither JSON nor a Python literal ({text[:60]!r}...); is the file "
                        "complete? Delete a damaged download and run again"
                    ) from None
            if not isinstance(record, dict):
                raise DataFormatError(
                    f"{path}, line {number}: expected one object per line, found {type(record).__name__}"
                )
            yield number, record


def read_reviews(path: Path) -> pa.Table:
    """A review file (JSON lines, any release) or ratings-only CSV as canonical interactions."""
    with _open(path) as handle:
        head = handle.read(1 << 12).lstrip()
    if not head:
        raise DataFormatError(f"{path}: the file is empty; expected one review or rating per line")
    if head[:1] in (b"{", b"["):
        return _read_json_reviews(path)
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    with _open(path) as handle:
        data = handle.read()
    if first.split(",")[0].strip() == "user_id":  # 2023 benchmark CSV: header, times in ms
        frame = parse_delimited(data, str(path), ",")
        columns = {"user": "user_id", "item": "parent_asin", "rating": "rating", "timestamp": "timestamp"}
        table = read_table(frame, columns, label=str(path), first_line=2).to_pandas()
        table["timestamp"] = table["timestamp"] / 1000.0
        return pa.Table.from_pandas(table, preserve_index=False)
    frame = parse_delimited(data, str(path), ",", ["user", "item", "rating", "timestamp"])
    return read_table(frame, {"rating": "rating", "timestamp": "timestamp"}, label=str(path))


def _read_json_reviews(path: Path) -> pa.Table:
    fields: tuple[str, str, str, str, float] | None = None
    columns: dict[str, list[Any]] = {"user": [], "item": [], "rating": [], "timestamp": []}
    for number, record in _records(path):
        if fields is None:
            fields = _NEW if "user_id" in record else _OLD
        user_key, item_key, rating_key, time_key, unit = fields
        if item_key == "parent_asin" and item_key not in record:
            item_key = "asin"
        values = []
        for canonical, key in zip(("user", "item", "rating", "timestamp"), (user_key, item_key, rating_key, time_key)):
            if key not in record:
                raise DataFormatError(
                    f"{path}, line {number}, column {key!r}: missing (the {canonical!r} field; keys found: "
                    f"{', '.join(record)}); every review needs {user_key}, {item_key}, {rating_key} and {time_key}"
                )
            value = record[key]
            if canonical in ("user", "item"):
                value = "" if value is None else str(value).strip()
                if not value:
                    raise DataFormatError(
                        f"{path}, line {number}, column {key!r}: empty id; every review needs a user and an item "
                        "(drop incomplete lines first)"
                    )
            else:
                number_value = _float(value)
                if number_value is None:
                    raise DataFormatError(
                        f"{path}, line {number}, column {key!r}: {value!r} is not a number; "
                        + ("use Unix time" if canonical == "timestamp" else "fix or drop the line")
                    )
                value = number_value * (unit if canonical == "timestamp" else 1.0)
            values.append(value)
        for canonical, value in zip(columns, values):
            columns[canonical].append(value)
    if fields is None:
        raise DataFormatError(f"{path}: no reviews (only blank lines); is it the right file?")
    return pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_PRICE = re.compile(r"^\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


def _price(value: Any) -> float:
    """2014/2023 give numbers, 2018 strings such as ``"$12.99"`` (ranges and junk count as unknown)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else math.nan
    match = _PRICE.match(str(value)) if value is not None else None
    return float(match.group(1).replace(",", "")) if match else math.nan


def _main_category(record: dict[str, Any]) -> str:
    for key in ("main_category", "main_cat"):
        if record.get(key):
            return str(record[key])
    paths = record.get("categories") or record.get("category") or []
    if paths and isinstance(paths[0], list):  # 2014: [['Beauty', 'Skin Care', ...], ...]
        path = paths[0]
        return str(path[1] if len(path) > 1 else path[0]) if path else ""
    return str(paths[0]) if paths else ""


def read_metadata(path: Path, wanted: set[str] | None = None) -> pa.Table:
    """Item metadata (``item, title, category, brand, price``) of the items in ``wanted`` (all if None)."""
    columns: dict[str, list[Any]] = {"item": [], "title": [], "category": [], "brand": [], "price": []}
    for number, record in _records(path):
        item = record.get("parent_asin") or record.get("asin")
        if not item:
            raise DataFormatError(
                f"{path}, line {number}, column 'asin': missing (keys found: {', '.join(record)}); every metadata "
                "record needs asin (2014/2018) or parent_asin (2023)"
            )
        item = str(item)
        if wanted is not None and item not in wanted:
            continue
        columns["item"].append(item)
        columns["title"].append(str(record.get("title") or ""))
        columns["category"].append(_main_category(record))
        columns["brand"].append(str(record.get("brand") or record.get("store") or ""))
        columns["price"].append(_price(record.get("price")))
    frame = pd.DataFrame(columns).astype({"price": "float64"})
    return pa.Table.from_pandas(frame, preserve_index=False)
