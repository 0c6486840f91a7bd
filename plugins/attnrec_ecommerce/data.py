"""Shop behaviour logs: a generic e-commerce data module and the Taobao UserBehavior format.

Amazon review files (5-core and the rest) are read by the core's
:class:`attnrec.data.AmazonReviewsDataModule`, which already puts category, brand and price
into the catalog; the bundled :class:`attnrec.data.SyntheticDataModule` (a shop log with item
categories) is the default data of this plugin's configs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from attnrec.data import DataFormatError, InteractionDataModule, Loaded, cache_root, fetch, read_table

SIDE_FIELDS = ("category", "brand", "price")
TAOBAO_COLUMNS = ("user", "item", "category", "behavior", "timestamp")
TAOBAO_BEHAVIORS = ("pv", "cart", "fav", "buy")
TAOBAO_HOME = "https://tianchi.aliyun.com/dataset/649"
TAOBAO_FIXED = ("columns", "sep", "table")
"""Base arguments TaobaoDataModule fixes: its layout is Taobao's."""


class EcommerceDataModule(InteractionDataModule):
    """A behaviour log (``user, item, timestamp`` plus optional ``behavior``, ``category``,
    ``brand``, ``price``) from a file or a table in memory (Arrow, pandas or ``datasets.Dataset``).

    ``columns`` maps those canonical fields to the source's column names (unmapped fields are
    looked up under their own name and skipped when absent, so any side feature may be
    missing). ``behaviors`` keeps only the listed behaviour types (e.g. ``[buy]`` for purchase
    prediction, ``[pv, cart, fav, buy]`` for all) and is recorded in the protocol's filtering.
    Side features come from ``items_path`` when given (an item table: ``item`` + the side
    fields), else from the log's rows (an item's first row wins). The catalog gets
    ``category`` and ``brand`` as integer codes (0 = unknown), ``price`` as a float (0 =
    unknown) and ``price_bucket``, its quantile bucket ``1..price_buckets`` (0 = unknown), so
    models embed price like a category. ``path``, ``columns``, ``sep``, ``items_path`` and
    ``table`` are :class:`~attnrec.data.InteractionDataModule`'s arguments, read as above; the
    split, window, sampling and loader arguments are :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(
        self,
        item_columns: dict[str, str] | None = None,
        behaviors: list[str] | None = None,
        price_buckets: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["table"])
        if price_buckets < 1:
            raise ValueError(f"{type(self).__name__}: price_buckets must be at least 1, got {price_buckets}")
        self.item_columns = dict(item_columns or {})
        self.behaviors = list(behaviors) if behaviors else None
        self.price_buckets = price_buckets

    def read_log(self) -> tuple[pd.DataFrame, str]:
        """The raw log with canonical column names, and a label naming it in errors."""
        if self.table is not None:
            source: Any = self.table
            label = "<table>"
        elif self.path is not None:
            source, label = os.path.expanduser(self.path), self.path
        else:
            raise ValueError(f"{type(self).__name__}: give path= (a behaviour log file) or table= (a table)")
        frame = read_table(source, self.columns, sep=self.sep, extra=True).to_pandas()
        return frame, label

    def load(self) -> Loaded:
        log, label = self.read_log()
        filtering = "none"
        if self.behaviors is not None:
            if "behavior" not in log.columns:
                raise DataFormatError(
                    f"{label}: behaviors={self.behaviors} was given but the log has no 'behavior' column (columns: "
                    f"{', '.join(map(str, log.columns))}); map it with columns={{'behavior': '<your column>'}}"
                )
            kept = log["behavior"].astype(str).isin(self.behaviors)
            if not kept.any():
                found = ", ".join(sorted(log["behavior"].astype(str).unique())[:10])
                raise DataFormatError(f"{label}: no row has a behaviour in {self.behaviors}; behaviours found: {found}")
            log = log[kept.to_numpy()]
            filtering = f"behavior in {{{', '.join(self.behaviors)}}}"
        interactions = pa.Table.from_pandas(
            log[[c for c in ("user", "item", "timestamp") if c in log.columns]], preserve_index=False
        )
        if self.items_path is not None:
            items = read_table(
                os.path.expanduser(self.items_path), self.item_columns, required=("item",), extra=True
            ).to_pandas()
            side_label = self.items_path
        else:
            items, side_label = log, label
        return Loaded(interactions, self._side_table(items, side_label), filtering)

    def _side_table(self, rows: pd.DataFrame, label: str) -> pa.Table | None:
        present = [field for field in SIDE_FIELDS if field in rows.columns]
        if not present:
            return None
        table = rows[["item", *present]].drop_duplicates("item", keep="first").reset_index(drop=True)
        for field in ("category", "brand"):
            if field in table.columns:
                table[field] = table[field].astype(str).replace({"nan": "", "None": ""})
        if "price" in table.columns:
            text = table["price"].astype(str).str.strip().replace({"nan": "", "None": ""})
            price = pd.to_numeric(text, errors="coerce")
            bad = price.isna() & (text != "")
            if bool(bad.any()):
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataFormatError(
                    f"{label}, item {table['item'].iloc[row]!r}, column 'price': {text.iloc[row]!r} is not a number; "
                    "leave unknown prices empty"
                )
            table["price"] = price.astype(np.float64)
            known = price.notna().to_numpy()
            bucket = pd.Series([""] * len(table), dtype=object)
            if known.any():
                rank = price[known].rank(method="first").to_numpy()  # 1..n, ties broken by order
                codes = np.ceil(rank * self.price_buckets / known.sum()).astype(int)  # equal-frequency 1..B
                bucket[known] = [f"{code:03d}" for code in codes]
            table["price_bucket"] = bucket
        return pa.Table.from_pandas(table, preserve_index=False)


class TaobaoDataModule(EcommerceDataModule):
    """Taobao UserBehavior (Alibaba, Tianchi data set 649) or any log in its CSV layout:
    ``user_id,item_id,category_id,behavior_type,timestamp``, no header, behaviour one of
    ``pv`` (page view), ``cart``, ``fav``, ``buy``, timestamp in Unix seconds.

    ``path`` reads a local file. Tianchi serves the file only after a login, so there is no
    fixed public address: give ``url`` (a mirror you trust) and it is downloaded once into
    ``root`` (default: the attnrec cache), checked against ``sha256`` when given, else against
    the digest recorded at first download. ``nrows`` reads the first rows only (the full file
    holds 100 million). Malformed rows raise an error naming the file, line and column. An
    item table (``items_path``, ``item_columns``) and the split, window, sampling and loader
    arguments are :class:`EcommerceDataModule`'s and :class:`~attnrec.data.SequenceDataModule`'s.
    """

    def __init__(
        self,
        url: str | None = None,
        root: str | None = None,
        sha256: str | None = None,
        nrows: int | None = None,
        behaviors: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(behaviors or ()) - set(TAOBAO_BEHAVIORS))
        if unknown:
            raise ValueError(f"TaobaoDataModule: unknown behaviour {unknown[0]!r}; choose from {', '.join(TAOBAO_BEHAVIORS)}")
        super().__init__(columns=None, sep=None, table=None, behaviors=behaviors, **kwargs)
        self.save_hyperparameters(ignore=list(TAOBAO_FIXED))  # fixed here, so not arguments to rebuild it with
        self.url, self.root, self.sha256, self.nrows = url, root, sha256, nrows

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else "taobao-userbehavior"

    def _locate(self) -> Path:
        if self.path is not None:
            location = Path(os.path.expanduser(self.path))
            if not location.is_file():
                raise FileNotFoundError(f"{location}: no such file; pass the UserBehavior.csv file as path=")
            return location
        if self.url is not None:
            folder = Path(self.root) if self.root else cache_root() / "taobao"
            return fetch(self.url, folder, sha256=self.sha256)
        raise FileNotFoundError(
            f"TaobaoDataModule: give path= (a local UserBehavior.csv) or url= (a mirror to download and cache). "
            f"The original is at {TAOBAO_HOME} (free, after a Tianchi login)."
        )

    def read_log(self) -> tuple[pd.DataFrame, str]:
        location = self._locate()
        label = str(location)
        layout = "a Taobao UserBehavior file has 5 comma-separated fields per line: " + ",".join(
            ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
        )
        try:
            frame = pd.read_csv(
                location, header=None, names=list(TAOBAO_COLUMNS), dtype=str, keep_default_na=False,
                nrows=self.nrows, index_col=False,
            )  # fmt: skip
        except pd.errors.EmptyDataError:
            raise DataFormatError(f"{label}: the file is empty; {layout}") from None
        except pd.errors.ParserError as exc:
            raise DataFormatError(f"{label}: {exc}; {layout}") from exc
        if len(frame) == 0:
            raise DataFormatError(f"{label}: the file is empty; {layout}")
        for column in TAOBAO_COLUMNS:
            values = frame[column].fillna("").astype(str).str.strip()
            if column == "behavior":
                bad = ~values.isin(TAOBAO_BEHAVIORS).to_numpy()
                why = f"is not one of {', '.join(TAOBAO_BEHAVIORS)}"
            else:
                bad = ~values.str.fullmatch(r"-?\d+").to_numpy()
                why = "is not an integer"
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                shown = repr(values.iloc[row]) if values.iloc[row] else "an empty field (too few fields?)"
                raise DataFormatError(f"{label}, line {row + 1}, column {column!r}: {shown} {why}; {layout}")
            frame[column] = values
        frame = frame.astype({"user": np.int64, "item": np.int64, "timestamp": np.float64})
        return frame, label
