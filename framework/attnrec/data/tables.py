"""Reading interaction tables into HF ``datasets`` with errors that name file, row, column and fix.

The id policy: whitespace around an id is not part of it. A column whose ids are all integers
(``1``, ``1.0``, ``+1``) is read in plain decimal form, so ``1``, `` 1`` and ``1.0`` are one
user, with a warning that counts the ids written more than one way. In a column that also holds
other ids, two spellings of one integer are refused naming both, since nothing tells whether
they mean one id or two. Zero-padded ids (``007``) are codes and kept as written.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

REQUIRED = ("user", "item")


class DataFormatError(ValueError):
    """Input data that cannot be read as interactions; the message says where and how to fix it."""


SEPARATORS = (",", "\t", ";", "|")
"""Separators a line may use instead of the file's, for the mixed-separator diagnosis."""

INTEGER_ID = re.compile(r"([+-]?)(0|[1-9][0-9]*)(?:\.0*)?")
"""An id that is an integer in plain decimal form, possibly written as a float (``1.0``).
Zero-padded ids (``007``) are codes, not integers: they are kept as written."""


@dataclass(frozen=True)
class _Rows:
    """How errors name a table's rows: ``line`` numbers for a delimited text (the header is line
    1), 1-based ``row`` numbers for records (Parquet, JSON, in-memory tables), offset so that
    the table's first row is ``first``. ``sep`` is a delimited text's separator, to recognise a
    line written with another one."""

    label: str
    first: int = 1
    unit: Literal["line", "row"] = "row"
    sep: str | None = None

    def __call__(self, index: int) -> str:
        return f"{self.label}, {self.unit} {index + self.first}"


def _reader(path: Path, sep: str | None, header: bool, names: Sequence[str] | None) -> tuple[pd.DataFrame, _Rows]:
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            return pd.read_parquet(path), _Rows(str(path))
        if suffixes.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            lines = not suffixes.endswith(".json") or _looks_like_lines(path)
            return pd.read_json(path, lines=lines, dtype=False), _Rows(str(path))
        if sep is None:
            sep = "\t" if suffixes.endswith((".tsv", ".tsv.gz", ".inter", ".data")) else ","
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=list(names) if names is not None else None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,  # a skipped blank line would shift every later line number
            engine="python" if len(sep) > 1 else "c",
        )
    except pd.errors.EmptyDataError:
        raise DataFormatError(
            f"{path}: the file is empty; expected a header line and one interaction per line"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot be parsed ({exc}); check the separator (sep=...) and quoting") from exc
    blank = len(frame)
    while blank and not "".join(map(str, frame.iloc[blank - 1])).strip():
        blank -= 1  # blank lines at the end are no data
    return frame.iloc[:blank], _Rows(str(path), 2 if header else 1, "line", sep)


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
    source's names; unmapped canonical names are looked up as they are. Ids follow the module's
    policy (whitespace trimmed, integer columns in plain form) unless ``integer_ids`` demands
    integers; ``timestamp`` must be a finite number or a date. Every problem raises
    :class:`DataFormatError` naming the file, the place and the column: the line of a CSV/TSV
    file (the header is line 1), the 1-based row of a Parquet or JSON (Lines) file. For an
    in-memory ``source`` parsed from a file, ``label`` names that file and ``first_line`` is the
    number of its first row. Other columns are dropped unless ``extra`` (item tables keep their
    side information).
    """
    columns = dict(columns or {})
    if isinstance(source, datasets.Dataset):
        frame, rows = source.to_pandas(), _Rows(label or "<Dataset>", first_line)
    elif isinstance(source, pd.DataFrame):
        frame, rows = source.copy(), _Rows(label or "<DataFrame>", first_line)
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; pass the path of an interactions file")
        frame, rows = _reader(path, sep, header, names)
    if len(frame) == 0:
        raise DataFormatError(f"{rows.label}: no interactions (only a header, or empty); add at least one row")
    raw = frame
    rename = {}
    for canonical in dict.fromkeys([*required, *columns]):
        source_name = columns.get(canonical, canonical)
        if source_name not in frame.columns:
            if canonical in required or canonical in columns:
                found = ", ".join(map(str, frame.columns))
                raise DataFormatError(
                    f"{rows.label}: missing column {source_name!r} (the {canonical!r} field); columns found: {found}. "
                    f"Pass columns={{'{canonical}': '<your column>'}} to map it.{_header_separator(frame, rows)}"
                )
            continue
        rename[source_name] = canonical
    if "timestamp" not in rename.values() and "timestamp" in frame.columns:
        rename["timestamp"] = "timestamp"
    keep = [c for c in frame.columns if c in rename or (extra and c not in rename.values())]
    frame = frame[keep].rename(columns=rename)
    _check_repeated_header(frame, rename, rows)
    for canonical in [c for c in ("user", "item") if c in frame.columns]:
        values = frame[canonical]
        missing = values.isna() | (values.astype(str).str.strip() == "")
        if bool(missing.any()):
            index = int(np.flatnonzero(missing.to_numpy())[0])
            raise DataFormatError(
                _whole_row(raw, index, rows)
                or f"{rows(index)}, column {canonical!r}: empty id; every interaction needs a user and an item "
                "(drop incomplete rows first)"
            )
    for canonical in [c for c in ("user", "item") if c in frame.columns]:
        if integer_ids:
            frame[canonical] = _as_integers(frame[canonical], rows, canonical, raw)
        else:
            frame[canonical] = _normalise_ids(frame[canonical], rows, canonical)
    if "timestamp" in frame.columns:
        frame["timestamp"] = _as_time(frame["timestamp"], rows, raw)
    if "rating" in frame.columns:
        frame["rating"] = _as_number(frame["rating"], rows, "rating", raw)
    return datasets.Dataset.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def _whole_row(raw: pd.DataFrame, index: int, rows: _Rows) -> str | None:
    """When a field of a delimited text is wrong, what may be wrong with its whole line: blank,
    or written with another separator (pandas then reads it as one field and empty ones)."""
    if rows.sep is None:
        return None
    fields = [str(value) for value in raw.iloc[index]]
    filled = [i for i, field in enumerate(fields) if field.strip()]
    if not filled:
        return f"{rows(index)}: blank line inside the data; delete it"
    head = fields[: filled[-1] + 1]  # a line with another separator leaves the fields after it empty
    others = [s for s in SEPARATORS if s != rows.sep and any(s in field for field in head)]
    if others and "" in fields[len(head) :]:
        return (
            f"{rows(index)}: fields separated by {others[0]!r}, but the file's separator is {rows.sep!r} (as in its "
            f"header); write every line with one separator (pass sep={others[0]!r} if the whole file uses it)"
        )
    return None


def _header_separator(frame: pd.DataFrame, rows: _Rows) -> str:
    """A hint when a delimited text's header was read as one column: it uses another separator."""
    if rows.sep is None or len(frame.columns) != 1:
        return ""
    others = [s for s in SEPARATORS if s != rows.sep and s in str(frame.columns[0])]
    return f" The header seems separated by {others[0]!r}: pass sep={others[0]!r}." if others else ""


def _check_repeated_header(frame: pd.DataFrame, rename: dict[str, str], rows: _Rows) -> None:
    inverse = {v: k for k, v in rename.items()}
    keys = [c for c in ("user", "item") if c in inverse]
    same = np.ones(len(frame), dtype=bool)
    for canonical in keys:
        same &= frame[canonical].astype(str).to_numpy() == str(inverse[canonical])
    if keys and same.any():
        index = int(np.flatnonzero(same)[0])
        raise DataFormatError(
            f"{rows(index)}: repeats the header line (were files concatenated with their headers?); delete the "
            "repeated header rows"
        )


def plain_id(value: Any) -> Any:
    """``value`` as the id policy reads it on its own: whitespace trimmed, an integer in plain
    form (``" 1.0"`` -> ``"1"``); anything else unchanged. For ids given one at a time (a
    ``recommend`` request)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    match = INTEGER_ID.fullmatch(text)
    if match is None:
        return text
    sign, digits = match.groups()
    return ("-" if sign == "-" and digits != "0" else "") + digits


def _normalise_ids(values: pd.Series, rows: _Rows, column: str) -> pd.Series:
    """The module's id policy, applied to the distinct values (ids repeat, so this is cheap)."""
    if pd.api.types.is_integer_dtype(values):
        return values
    if pd.api.types.is_float_dtype(values) and bool((np.isfinite(values) & (values == np.floor(values))).all()):
        return values.astype(np.int64)  # integers in a float column (as pandas writes a column with gaps)
    codes, uniques = pd.factorize(values.astype(str))  # JSON may mix 123 and "A12": one type, or ids cannot be sorted
    spelled = pd.Series(np.asarray(uniques, dtype=object))
    text = spelled.str.strip()
    plain = text.map(plain_id)
    integer = text.str.fullmatch(INTEGER_ID.pattern)
    if bool(integer.all()):
        read = plain
    else:
        read = text
        numeric = pd.DataFrame({"plain": plain[integer], "text": text[integer]}).drop_duplicates("text")
        twice = numeric[numeric["plain"].duplicated(keep=False)]
        if len(twice):
            a, b = twice.index[twice["plain"] == twice["plain"].iloc[0]][:2]
            line_a, line_b = (int(np.flatnonzero(codes == i)[0]) for i in (a, b))
            raise DataFormatError(
                f"{rows(line_a)}, column {column!r}: {spelled[a]!r} and {spelled[b]!r} ({rows.unit} "
                f"{line_b + rows.first}) are one integer written two ways among ids that are not all integers, so "
                f"they may name one {column} or two; write each id one way throughout the file"
            )
    same = read[read.duplicated(keep=False)]
    if len(same):
        a, b = same.index[same == same.iloc[0]][:2]
        warnings.warn(
            f"{rows.label}, column {column!r}: {column} ids written in more than one way: {same.nunique()} (e.g. "
            f"{spelled[a]!r} and {spelled[b]!r}); each is read as one id (whitespace trimmed, integers in plain form)",
            stacklevel=2,
        )
    return pd.Series(read.to_numpy()[codes], index=values.index, dtype=object)


def _shown(value: Any) -> str:
    """A value as the file holds it (``inf``, not numpy's ``np.float64(inf)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _to_numeric(values: pd.Series, exact_integers: bool = False) -> pd.Series:
    """``pd.to_numeric(values, errors="coerce")``, through Arrow's cast when every value parses:
    40x faster on a column of 500,000 number strings (0.03 s against 1.4 s). A column with
    anything Arrow refuses (blanks, spaces, words, ``1.0`` for an integer) takes pandas' path,
    whose NaNs the callers turn into errors naming the row."""
    try:
        cast = pc.cast(pa.array(values, from_pandas=True), pa.int64() if exact_integers else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pd.to_numeric(values, errors="coerce")
    if cast.null_count:
        return pd.to_numeric(values, errors="coerce")
    return pd.Series(cast.to_numpy(zero_copy_only=False), index=values.index)


def _as_integers(values: pd.Series, rows: _Rows, column: str, raw: pd.DataFrame) -> pd.Series:
    numbers = _to_numeric(values, exact_integers=True)
    bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
    if bool(bad.any()):
        index = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            _whole_row(raw, index, rows)
            or f"{rows(index)}, column {column!r}: {_shown(values.iloc[index])} is not an integer id; this format "
            "stores integer ids, so fix the row or read the file with the generic loader"
        )
    return numbers.astype(np.int64)


def _as_number(values: pd.Series, rows: _Rows, column: str, raw: pd.DataFrame) -> pd.Series:
    numbers = _to_numeric(values)
    bad = ~np.isfinite(numbers.astype(np.float64))
    if bool(bad.any()):
        index = int(np.flatnonzero(bad.to_numpy())[0])
        what = "is not a number" if pd.isna(numbers.iloc[index]) else "is not a finite number"
        raise DataFormatError(
            _whole_row(raw, index, rows)
            or f"{rows(index)}, column {column!r}: {_shown(values.iloc[index])} {what}; fix or drop the row"
        )
    return numbers.astype(np.float64)


def _as_time(values: pd.Series, rows: _Rows, raw: pd.DataFrame) -> pd.Series:
    numbers = _to_numeric(values)
    if not bool(numbers.isna().any()):
        infinite = ~np.isfinite(numbers.astype(np.float64))
        if bool(infinite.any()):
            index = int(np.flatnonzero(infinite.to_numpy())[0])
            raise DataFormatError(
                f"{rows(index)}, column 'timestamp': {_shown(values.iloc[index])} is not a finite time, so the row "
                "cannot be ordered; give its time in Unix seconds or as an ISO 8601 date, or drop the row"
            )
        return numbers.astype(np.float64)
    with warnings.catch_warnings():  # "could not infer format": mixed formats are parsed one by one, as wanted
        warnings.simplefilter("ignore", UserWarning)
        dates = pd.to_datetime(values, errors="coerce", utc=True)
    if not bool(dates.isna().any()):
        return (dates.astype("int64") // 10**9).astype(np.float64)
    bad = numbers.isna() & dates.isna()
    index = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else int(np.flatnonzero(numbers.isna().to_numpy())[0])
    raise DataFormatError(
        _whole_row(raw, index, rows)
        or f"{rows(index)}, column 'timestamp': {_shown(values.iloc[index])} is neither a number nor a date; use Unix "
        "seconds or ISO 8601 dates throughout the column"
    )


def as_columns(table: datasets.Dataset, names: Sequence[str]) -> dict[str, Any]:
    """Columns of a Dataset as numpy arrays (the form the splitters work on)."""
    frame = table.select_columns([n for n in names if n in table.column_names]).to_pandas()
    return {name: frame[name].to_numpy() for name in frame.columns}
