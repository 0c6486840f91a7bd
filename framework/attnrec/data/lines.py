"""One line per user, ``uid i1 i2 ...`` with items in time order: the format of the SASRec,
S3-Rec, ICLRec and FMLP-Rec repositories (their Amazon Beauty/Sports/Toys and Yelp files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .datamodule import Loaded, SequenceDataModule
from .tables import DataFormatError, read_table


def read_user_lines(path: str | os.PathLike) -> pd.DataFrame:
    """``user, item, timestamp`` rows from a one-line-per-user file; the timestamp is the item's
    position in its line (the format carries order, not time). Ids are integers when every id
    in the file is one, else strings. A line with a user and no item, or a user on two lines,
    raises naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; pass a file of lines 'user item item ...' (items in time order)")
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            user, history = fields[0], fields[1:]
            if not history:
                raise DataFormatError(f"{path}, line {number}: user {user!r} has no items; lines are 'user item item ...'")
            if user in first_line:
                raise DataFormatError(
                    f"{path}, line {number}: user {user!r} already has line {first_line[user]}; give each user one "
                    "line with all their items in time order"
                )
            first_line[user] = number
            users += [user] * len(history)
            items += history
            positions += range(len(history))
    if not users:
        raise DataFormatError(f"{path}: no lines with items; expected 'user item item ...' per line")
    return pd.DataFrame({"user": _ids(users), "item": _ids(items), "timestamp": np.asarray(positions, dtype=np.float64)})


def _ids(values: list[str]) -> np.ndarray:
    raw = np.asarray(values)
    try:
        return raw.astype(np.int64)
    except ValueError:
        return raw


class UserSequencesDataModule(SequenceDataModule):
    """Interactions from a one-line-per-user file (``uid i1 i2 ...``, items in time order, as
    in the S3-Rec repository's ``Toys_and_Games.txt``). The default ``loo`` split is these
    papers' protocol: the last item of a line is the test target, the one before it the
    validation target. Other arguments are :class:`SequenceDataModule`'s."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def load(self) -> Loaded:
        frame = read_user_lines(self.path)
        return Loaded(read_table(frame, label=str(self.path)))

    @property
    def name(self) -> str:
        return Path(self.path).stem
