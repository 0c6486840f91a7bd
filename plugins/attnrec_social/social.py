"""Reading and checking a social network: one friendship (or follow) per line, mapped onto the
interactions' users.

The policy, the same for every loader:

* **Self-loops** (a user listed as their own friend) are always refused: they are an id mistake
  in the file, and a self-loop would let a user's own vector pose as a friend's.
* **Unknown users** (an id with no interactions) are refused with ``unknown_users="error"``
  (the default); ``"drop"`` drops every line naming one, with a warning that counts them and
  names the first. Such a user has no item-space vector to offer, and a typo would otherwise
  silently remove a friendship.
* **Duplicates** (a line repeating an earlier one exactly) are refused with
  ``duplicate_edges="error"`` (the default) or dropped with a counting warning (``"drop"``).
  With ``symmetric=True`` a friendship is mutual, so ``a b`` and ``b a`` are the usual two
  spellings of one edge and not duplicates.

Ids are read as the interactions' are (:func:`attnrec.data.tables.plain_id`: whitespace
trimmed, integers in plain form), so `` 7`` and ``7.0`` in the social file name user ``7``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from attnrec.data import DataFormatError, IdMap
from attnrec.data.tables import plain_id
from torch import Tensor
from torch_geometric.utils import coalesce

Policy = Literal["error", "drop"]
FIELDS = ("user", "friend")


@dataclass(frozen=True)
class SocialStats:
    """What reading the social file kept and dropped (``data.social_stats``)."""

    lines: int
    edges: int  # directed edges in the graph (both directions of a mutual friendship)
    dropped_unknown: int
    dropped_duplicates: int
    users_with_friends: int


@dataclass(frozen=True)
class SocialTable:
    """The social file's two id columns as strings, and how to name a row in errors."""

    frame: pd.DataFrame  # columns user, friend (strings as written)
    label: str
    first: int  # number of the first data row
    unit: str  # "line" (delimited text) or "row" (Parquet)

    def where(self, index: int) -> str:
        return f"{self.label}, {self.unit} {index + self.first}"


def read_social_table(
    path: str | Path,
    columns: dict[str, str] | None = None,
    sep: str | None = None,
    header: bool = True,
) -> SocialTable:
    """A CSV/TSV (``sep`` guessed from the suffix: tab for .tsv/.txt, else comma) or Parquet
    file with a ``user`` and a ``friend`` column (``columns`` maps them to the file's names;
    without a header, the first two fields)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; pass the social network's path (lines 'user friend')")
    columns = dict(columns or {})
    if path.suffix.lower() in (".parquet", ".pq"):
        frame, first, unit = pd.read_parquet(path).astype(str), 1, "row"
    else:
        if sep is None:
            sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
        try:
            frame = pd.read_csv(
                path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False,
                skip_blank_lines=False, names=None if header else list(FIELDS),
            )  # fmt: skip
        except pd.errors.EmptyDataError:
            raise DataFormatError(f"{path}: the file is empty; expected one 'user friend' pair per line") from None
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataFormatError(f"{path}: cannot be parsed ({exc}); check the separator (social_sep=...)") from exc
        first, unit = (2 if header else 1), "line"
    frame.columns = [str(c).strip() for c in frame.columns]
    rename = {}
    for field in FIELDS:
        name = columns.get(field, field)
        if name not in frame.columns:
            raise DataFormatError(
                f"{path}: missing column {name!r} (the {field!r} field); columns found: {', '.join(frame.columns)}. "
                f"Pass social_columns={{'{field}': '<your column>'}} to map it."
            )
        rename[name] = field
    frame = frame[list(rename)].rename(columns=rename)
    while len(frame) and not "".join(frame.iloc[-1]).strip():
        frame = frame.iloc[:-1]  # blank lines at the end are no data
    if len(frame) == 0:
        raise DataFormatError(f"{path}: no friendships (only a header, or empty); add 'user friend' lines")
    return SocialTable(frame.reset_index(drop=True), str(path), first, unit)


def _as_ids(values: pd.Series, integers: bool) -> np.ndarray:
    """Raw ids read as the interactions' ids are: trimmed, integers in plain form."""
    plain = values.astype(str).map(plain_id)
    if not integers:
        return plain.to_numpy(dtype=object)
    return np.asarray([int(x) if isinstance(x, str) and x.lstrip("-").isdigit() else x for x in plain], dtype=object)


def social_graph(
    table: SocialTable,
    user_map: IdMap,
    unknown_users: Policy = "error",
    duplicate_edges: Policy = "error",
    symmetric: bool = True,
) -> tuple[Tensor, SocialStats]:
    """The social network as PyG's ``edge_index [2, E]`` over internal user ids, **friend ->
    user** (``edge_index[0]`` is whose vector flows, ``edge_index[1]`` who receives it), sorted
    and de-duplicated; with ``symmetric`` both directions of every friendship. Applies the
    module's policy for self-loops, unknown users and duplicates (see the module docstring)."""
    for policy, name in ((unknown_users, "unknown_users"), (duplicate_edges, "duplicate_edges")):
        if policy not in ("error", "drop"):
            raise ValueError(f"{name}={policy!r}; choose 'error' or 'drop'")
    frame = table.frame
    for field in FIELDS:
        empty = (frame[field].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            index = int(np.flatnonzero(empty)[0])
            raise DataFormatError(
                f"{table.where(index)}, field {field!r}: empty id; every line needs a user and a friend (delete or "
                "complete the line)"
            )
    known = user_map.raw[1:]
    integers = bool(len(known)) and all(isinstance(x, (int, np.integer)) for x in known)
    user_raw, friend_raw = _as_ids(frame["user"], integers), _as_ids(frame["friend"], integers)
    loops = np.asarray([a == b for a, b in zip(user_raw, friend_raw)], dtype=bool)
    if loops.any():
        index = int(np.flatnonzero(loops)[0])
        raise DataFormatError(
            f"{table.where(index)}, fields 'user' and 'friend': user {user_raw[index]!r} is listed as their own "
            f"friend (a self-loop; {int(loops.sum())} such lines in all). Self-loops are always refused: delete them"
        )
    lookup = {value: i + 1 for i, value in enumerate(known)}
    users = np.asarray([lookup.get(x, 0) for x in user_raw], dtype=np.int64)
    friends = np.asarray([lookup.get(x, 0) for x in friend_raw], dtype=np.int64)
    unknown = (users == 0) | (friends == 0)
    dropped_unknown = int(unknown.sum())
    if dropped_unknown:
        index = int(np.flatnonzero(unknown)[0])
        field, value = ("user", user_raw[index]) if users[index] == 0 else ("friend", friend_raw[index])
        names = {x for x, i in zip(user_raw, users) if i == 0} | {x for x, i in zip(friend_raw, friends) if i == 0}
        if unknown_users == "error":
            raise DataFormatError(
                f"{table.where(index)}, field {field!r}: user {value!r} has no interactions, so the social graph "
                f"cannot place them ({dropped_unknown} lines name {len(names)} such users). Fix the id, or pass "
                "unknown_users='drop' to drop every line that names a user without interactions"
            )
        warnings.warn(
            f"{table.label}: dropped {dropped_unknown} lines naming {len(names)} users without interactions "
            f"(first: {table.unit} {index + table.first}, {field} {value!r}); pass unknown_users='error' to refuse them",
            stacklevel=2,
        )
    rows = np.flatnonzero(~unknown)
    pairs = pd.DataFrame({"user": users[rows], "friend": friends[rows]})
    repeated = pairs.duplicated().to_numpy()
    dropped_duplicates = int(repeated.sum())
    if dropped_duplicates:
        index = int(rows[np.flatnonzero(repeated)[0]])
        pair = pairs.iloc[int(np.flatnonzero(repeated)[0])]
        earlier = int(rows[np.flatnonzero((pairs["user"] == pair["user"]) & (pairs["friend"] == pair["friend"]))[0]])
        message = (
            f"{table.where(index)}: repeats {table.unit} {earlier + table.first} (user {user_raw[index]!r}, friend "
            f"{friend_raw[index]!r}; {dropped_duplicates} repeated lines in all)"
        )
        if duplicate_edges == "error":
            raise DataFormatError(
                f"{message}. Delete the repeated lines, or pass duplicate_edges='drop' to keep the first of each"
            )
        warnings.warn(f"{message}: dropped, the first kept; pass duplicate_edges='error' to refuse them", stacklevel=2)
    source = torch.as_tensor(pairs["friend"].to_numpy()[~repeated])
    target = torch.as_tensor(pairs["user"].to_numpy()[~repeated])
    edge_index = torch.stack([source, target])
    if symmetric:
        edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    edge_index = coalesce(edge_index, num_nodes=len(user_map) + 1)
    stats = SocialStats(
        lines=len(frame), edges=int(edge_index.shape[1]), dropped_unknown=dropped_unknown,
        dropped_duplicates=dropped_duplicates, users_with_friends=int(edge_index[1].unique().numel()),
    )  # fmt: skip
    return edge_index, stats


def degrees(edge_index: Tensor, num_users: int) -> Tensor:
    """How many friends each user (0..num_users) receives vectors from."""
    return torch.bincount(edge_index[1], minlength=num_users + 1)

