"""Reading interaction tables into HF ``datasets`` with errors that name file, row, column and fix."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import datasets
import numpy as np
import pandas as pd

REQUIRED = ("user", "item")


class DataFormatError(ValueError):
    """Input data that cannot be read as interactions; the message says where and how to fix it."""


def _reader(path: Path, sep: str | None, header: bool, names: Sequence[str] | None) -> pd.DataFrame:
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if suffixes.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            return pd.read_json(path, lines=not suffixes.endswith(".json") or _looks_like_lines(path), dtype=False)
        if sep is None:
            sep = "\t" if suffixes.endswith((".tsv", ".tsv.gz", ".inter", ".data")) else ","
        return pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=list(names) if names is not None else None,
            dtype=str,
            keep_default_na=False,
            engine="python" if len(sep) > 1 else "c",
        )
    except pd.errors.EmptyDataError:
        raise DataFormatError(
            f"{path}: the file is empty; expected a header line and one interaction per line"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot be parsed ({exc}); check the separator (sep=...) and quoting") from exc


def parse_delimited(
    data: bytes,
    label: str,
    sep: str,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """A delimited text (read from a file or an archive member) as string columns; with
    ``names`` the text has no header line. Quotes are not special (the GroupLens formats put
    bare quotes in titles). A blank line inside the data is an error (pandas would skip it and
    shift every later row number in error messages); blank lines at the end are ignored."""
    if not data.strip():
        raise DataFormatError(f"{label}: the file is empty; it should hold one record per line")
    data = data.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n"
    gap = data.find(b"\n\n")
    if data.startswith(b"\n") or gap >= 0:
        line = 1 if data.startswith(b"\n") else data[:gap].count(b"\n") + 2
        raise DataFormatError(f"{label}, line {line}: blank line inside the data; delete it")
    if len(sep) > 1:  # multi-character separators ('::') would need pandas' slow regex engine
        data = data.replace(sep.encode(encoding), b"\x1f")
        sep = "\x1f"
    try:
        return pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            header=None if names is not None else 0,
            names=list(names) if names is not None else None,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding=encoding,
            index_col=False,
        )
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{label}: the file is empty; it should hold one record per line") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{label}: cannot be parsed ({exc}); is it the right file for this format?") from exc


def tsv_rows(
    lines: Iterable[str], source: str | os.PathLike, names: Sequence[str], fix: str, start: int = 1
) -> Iterator[tuple[int, list[str]]]:
    """Non-blank tab-separated rows with their line numbers (the first is ``start``: 2 after a
    header); a row with the wrong number of fields raises naming ``source``, the line, the
    expected fields and ``fix``. For formats whose text fields are not quoted (MIND, RecBole
    atomic files), where a CSV parser would misread a stray quote."""
    for number, line in enumerate(lines, start=start):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataFormatError(
                f"{source}, line {number}: expected {len(names)} tab-separated fields ({', '.join(names)}), "
                f"found {len(fields)}. Fix: {fix}"
            )
        yield number, fields


def _looks_like_lines(path: Path) -> bool:
    with open(path, "rb") as handle:
        return not handle.read(1).startswith(b"[")


def read_table(
    source: str | os.PathLike | datasets.Dataset | pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    *,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    integer_ids: bool = False,
    required: Sequence[str] = REQUIRED,
    label: str | None = None,
    first_line: int = 1,
    extra: bool = False,
) -> datasets.Dataset:
    """Read interactions into a ``datasets.Dataset`` with canonical columns.

    ``columns`` maps canonical names (``user``, ``item``, ``timestamp``, ``rating`` ...) to the
    source's names; unmapped canonical names are looked up as they are. Ids stay as read
    (strings or integers) unless ``integer_ids`` demands integers; ``timestamp`` must be
    numeric or a date. Every problem raises :class:`DataFormatError` naming the file, the row
    (1-based line in the file) and the column. For an in-memory ``source`` parsed from a
    file, ``label`` names that file and ``first_line`` is the line of its first row. Other
    columns are dropped unless ``extra`` (item tables keep their side information).
    """
    columns = dict(columns or {})
    if isinstance(source, datasets.Dataset):
        label, frame = label or "<Dataset>", source.to_pandas()
    elif isinstance(source, pd.DataFrame):
        label, frame = label or "<DataFrame>", source.copy()
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; pass the path of an interactions file")
        label, frame = str(path), _reader(path, sep, header, names)
        first_line = 2 if header and names is None else 1
    if len(frame) == 0:
        raise DataFormatError(f"{label}: no interactions (only a header, or empty); add at least one row")
    rename = {}
    for canonical in {*required, *columns}:
        source_name = columns.get(canonical, canonical)
        if source_name not in frame.columns:
            if canonical in required or canonical in columns:
                found = ", ".join(map(str, frame.columns))
                raise DataFormatError(
                    f"{label}: missing column {source_name!r} (the {canonical!r} field); columns found: {found}. "
                    f"Pass columns={{'{canonical}': '<your column>'}} to map it."
                )
            continue
        rename[source_name] = canonical
    if "timestamp" not in rename.values() and "timestamp" in frame.columns:
        rename["timestamp"] = "timestamp"
    keep = [c for c in frame.columns if c in rename or (extra and c not in rename.values())]
    frame = frame[keep].rename(columns=rename)
    _check_repeated_header(frame, rename, label, first_line)
    for canonical in [c for c in ("user", "item") if c in frame.columns]:
        values = frame[canonical]
        missing = values.isna() | (values.astype(str).str.strip() == "")
        if bool(missing.any()):
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise DataFormatError(
                f"{label}, row {row + first_line}, column {canonical!r}: empty id; every interaction needs a "
                "user and an item (drop incomplete rows first)"
            )
    for canonical in [c for c in ("user", "item") if c in frame.columns]:
        if integer_ids:
            frame[canonical] = _as_integers(frame[canonical], label, canonical, first_line)
        elif frame[canonical].dtype == object:  # JSON may mix 123 and "A12": one type, or ids cannot be sorted
            frame[canonical] = frame[canonical].astype(str)
    if "timestamp" in frame.columns:
        frame["timestamp"] = _as_time(frame["timestamp"], label, first_line)
    if "rating" in frame.columns:
        frame["rating"] = _as_number(frame["rating"], label, "rating", first_line)
    return datasets.Dataset.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def _check_repeated_header(frame: pd.DataFrame, rename: dict[str, str], label: str, first_line: int) -> None:
    inverse = {v: k for k, v in rename.items()}
    keys = [c for c in ("user", "item") if c in inverse]
    same = np.ones(len(frame), dtype=bool)
    for canonical in keys:
        same &= frame[canonical].astype(str).to_numpy() == str(inverse[canonical])
    if keys and same.any():
        row = int(np.flatnonzero(same)[0])
        raise DataFormatError(
            f"{label}, row {row + first_line}: repeats the header line (were files concatenated with their "
            "headers?); delete the repeated header rows"
        )


def _as_integers(values: pd.Series, label: str, column: str, first_line: int) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers))
    if bool(bad.any()):
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            f"{label}, row {row + first_line}, column {column!r}: {values.iloc[row]!r} is not an integer id; "
            "this format stores integer ids, so fix the row or read the file with the generic loader"
        )
    return numbers.astype(np.int64)


def _as_number(values: pd.Series, label: str, column: str, first_line: int) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    if bool(numbers.isna().any()):
        row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise DataFormatError(
            f"{label}, row {row + first_line}, column {column!r}: {values.iloc[row]!r} is not a number; "
            "fix or drop the row"
        )
    return numbers.astype(np.float64)


def _as_time(values: pd.Series, label: str, first_line: int) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    if not bool(numbers.isna().any()):
        return numbers.astype(np.float64)
    with warnings.catch_warnings():  # "could not infer format": mixed formats are parsed one by one, as wanted
        warnings.simplefilter("ignore", UserWarning)
        dates = pd.to_datetime(values, errors="coerce", utc=True)
    if not bool(dates.isna().any()):
        return (dates.astype("int64") // 10**9).astype(np.float64)
    bad = numbers.isna() & dates.isna()
    row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else int(np.flatnonzero(numbers.isna().to_numpy())[0])
    raise DataFormatError(
        f"{label}, row {row + first_line}, column 'timestamp': {values.iloc[row]!r} is neither a number nor a date; "
        "use Unix seconds or ISO 8601 dates throughout the column"
    )


def as_columns(table: datasets.Dataset, names: Sequence[str]) -> dict[str, Any]:
    """Columns of a Dataset as numpy arrays (the form the splitters work on)."""
    frame = table.select_columns([n for n in names if n in table.column_names]).to_pandas()
    return {name: frame[name].to_numpy() for name in frame.columns}
