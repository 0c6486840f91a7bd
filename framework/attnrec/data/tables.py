"""Reading interaction tables into Arrow columns with errors that name file, row, column and fix.

The id policy: whitespace around an id is not part of it. A column whose ids are all integers
(``1``, ``1.0``, ``+1``) is read in plain decimal form, so ``1``, `` 1`` and ``1.0`` are one
user, with a warning that counts the ids written more than one way. In a column that also holds
other ids, two spellings of one integer are refused naming both, since nothing tells whether
they mean one id or two. Zero-padded ids (``007``) are codes and kept as written.

Files are read by pyarrow (CSV/TSV with every column as text, Parquet, JSON Lines) and checked
with ``pyarrow.compute`` and on the distinct values of each id column: ids repeat, so the id
policy and its checks cost per distinct id, not per row. pandas reads only what pyarrow cannot
(see :func:`_reader`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

if TYPE_CHECKING:  # accepted as input, never needed: importing it costs a second
    import datasets

REQUIRED = ("user", "item")


class DataFormatError(ValueError):
    """Input data that cannot be read as interactions; the message says where and how to fix it."""


SEPARATORS = (",", "\t", ";", "|")
"""Separators a line may use instead of the file's, for the mixed-separator diagnosis."""

INTEGER_ID = re.compile(r"([+-]?)(0|[1-9][0-9]*)(?:\.0*)?")
"""An id that is an integer in plain decimal form, possibly written as a float (``1.0``).
Zero-padded ids (``007``) are codes, not integers: they are kept as written."""

TEXT_CODES = pa.dictionary(pa.int32(), pa.string())
"""How the id columns of a delimited text are read when the caller takes codes."""

HEADER_BYTES = 1 << 20
"""How much of a delimited text is read to find its header line's column names."""


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


@dataclass(frozen=True)
class Distinct:
    """A column as codes into its distinct values, in order of first appearance (a missing
    value has code -1): checks, the id policy and the id maps work on the distinct values and
    reach the rows through the codes."""

    codes: np.ndarray
    values: pa.Array

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> Distinct:
        column = pa.chunked_array([column]) if isinstance(column, pa.Array) else column
        if pa.types.is_dictionary(column.type):
            distinct = cls._of_dictionary(column)
            if distinct is not None:
                return distinct
        column = _decoded(column)
        try:  # one array: encoding chunk by chunk and unifying the dictionaries costs three times more
            array = column.combine_chunks()
        except pa.ArrowInvalid:  # over 2 GiB of text in one array needs 64-bit offsets
            array = column.cast(pa.large_string()).combine_chunks()
        encoded = pc.dictionary_encode(array)
        indices = encoded.indices if not encoded.indices.null_count else pc.fill_null(encoded.indices, -1)
        return cls(indices.to_numpy(), encoded.dictionary)

    @classmethod
    def _of_dictionary(cls, column: pa.ChunkedArray) -> Distinct | None:
        """A dictionary column (ids read so from a CSV, a pandas categorical) through its codes,
        renumbered in order of first appearance: a quarter of the time of decoding and encoding
        its values again. None where its dictionary holds a missing value (or too much text)."""
        try:
            unified = column.unify_dictionaries().combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowCapacityError):
            return None
        if unified.dictionary.null_count:
            return None
        encoded = pc.dictionary_encode(unified.indices)
        codes = encoded.indices if not encoded.indices.null_count else pc.fill_null(encoded.indices, -1)
        values = unified.dictionary.take(encoded.dictionary)
        return cls(codes.to_numpy(), values).renamed(values)  # a dictionary may hold one value twice

    def first(self, marked: np.ndarray, missing: bool = False) -> int | None:
        """The first row whose distinct value ``marked`` flags (a missing value counts if
        ``missing``), or None."""
        rows = np.append(np.asarray(marked, dtype=bool), missing)[self.codes]
        return int(np.argmax(rows)) if rows.any() else None

    def to_rows(self, per_value: np.ndarray | pa.Array) -> pa.Array:
        """One entry of ``per_value`` (an array over the distinct values) per row."""
        return pc.take(per_value if isinstance(per_value, pa.Array) else pa.array(per_value), pa.array(self.codes))

    def renamed(self, per_value: pa.Array) -> Distinct:
        """The column once each distinct value became its entry of ``per_value``; values that
        became one (``1`` and ``1.0``) merge into the first's code."""
        encoded = pc.dictionary_encode(per_value)
        if len(encoded.dictionary) == len(per_value):
            return Distinct(self.codes, per_value)
        return Distinct(np.append(encoded.indices.to_numpy(), -1)[self.codes], encoded.dictionary)  # -1 stays missing


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-typed column (a pandas categorical, a Parquet dictionary) as its values."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _reader(
    path: Path, sep: str | None, header: bool, names: Sequence[str] | None, encoded: Sequence[str] = ()
) -> tuple[pa.Table, _Rows]:
    """The file as an Arrow table and how its rows are named. pyarrow reads Parquet, JSON Lines
    and delimited text; pandas reads a JSON array (pyarrow reads JSON Lines only), JSON Lines
    pyarrow refuses (a field that changes type, such as ``123`` beside ``"A12"``; an empty
    file) and the delimited texts :func:`_arrow_csv` leaves to it. pyarrow reads the ``encoded``
    columns of a delimited text dictionary-encoded."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            table = pq.read_table(path)
            index = (table.schema.pandas_metadata or {}).get("index_columns", [])
            return table.drop_columns([c for c in index if isinstance(c, str)]), _Rows(str(path))  # pandas' index
        if suffixes.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            lines = not suffixes.endswith(".json") or _looks_like_lines(path)
            if lines:
                try:
                    return pajson.read_json(path), _Rows(str(path))
                except pa.ArrowInvalid:
                    pass  # pandas reads the file or says what is wrong with it
            return _from_pandas(pd.read_json(path, lines=lines, dtype=False)), _Rows(str(path))
        if sep is None:
            sep = "\t" if suffixes.endswith((".tsv", ".tsv.gz", ".inter", ".data")) else ","
        table = _arrow_csv(path, sep, header, names, encoded)
        if table is None:
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
            table = _from_pandas(frame)
    except pd.errors.EmptyDataError:
        raise DataFormatError(
            f"{path}: the file is empty; expected a header line and one interaction per line"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot be parsed ({exc}); check the separator (sep=...) and quoting") from exc
    end = table.num_rows
    while end and not "".join(_fields(table, end - 1)).strip():
        end -= 1  # blank lines at the end are no data
    return table.slice(0, end), _Rows(str(path), 2 if header else 1, "line", sep)


def _arrow_csv(
    path: Path, sep: str, header: bool, names: Sequence[str] | None, encoded: Sequence[str] = ()
) -> pa.Table | None:
    """A delimited text read by pyarrow as pandas reads it with ``dtype=str`` (every field as
    text, a blank line as a row of empty fields so that line numbers stay exact), or None for
    pandas to read: a multi-character separator (pyarrow takes one character), no header and no
    names (pandas numbers the columns), a header whose names pandas would change (empty or
    repeated ones), and whatever pyarrow refuses (an empty file, a line with another number of
    fields, such as one written with another separator, which pandas reads so that the error
    can name it; bad UTF-8; a line break inside quotes). The ``encoded`` columns come
    dictionary-encoded, as the reader's threads encode them while parsing: faster than reading
    the text and encoding it after, and a fraction of the memory."""
    if len(sep) != 1 or not (header or names):
        return None
    names = list(names) if names is not None else _header_names(path, sep)
    if not names or "" in names or len(set(names)) < len(names):
        return None
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
            parse_options=pacsv.ParseOptions(delimiter=sep, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={name: TEXT_CODES if name in encoded else pa.string() for name in names}
            ),
        )
    except pa.ArrowInvalid:
        return None


def _header_names(path: Path, sep: str) -> list[str] | None:
    """The column names on a delimited text's first line; None if the file is empty, not UTF-8
    or has no line break in its first ``HEADER_BYTES``."""
    with pa.input_stream(str(path)) as stream:  # decompresses by extension, as pyarrow.csv does
        head = stream.read(HEADER_BYTES)
    line, newline, _ = head.partition(b"\n")
    if not line.strip() or (not newline and len(head) == HEADER_BYTES):
        return None
    try:
        text = line.rstrip(b"\r").decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return next(csv.reader([text], delimiter=sep), None)


def _from_pandas(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table with text column names; a column of mixed types, such as
    JSON's ``123`` beside ``"A12"``, as text, its missing values kept missing."""
    arrays = []
    for position in range(frame.shape[1]):
        values = frame.iloc[:, position]
        try:
            arrays.append(pa.array(values, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array(values.astype(str).to_numpy(dtype=object), mask=values.isna().to_numpy()))
    return pa.table(arrays, names=[str(name) for name in frame.columns])


def _fields(table: pa.Table, index: int) -> list[str]:
    """Row ``index`` of ``table``, each field as text."""
    return [str(column[index].as_py()) for column in table.columns]


def _is_dataset(source: Any) -> bool:
    """Whether ``source`` is an HF ``datasets.Dataset`` (there is none unless it was imported)."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(source, module.Dataset)


def to_arrow(source: pa.Table | pd.DataFrame | datasets.Dataset) -> pa.Table:
    """An in-memory table as an Arrow table (a Dataset's rows in its current order)."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pd.DataFrame):
        return _from_pandas(source)
    if _is_dataset(source):
        return source.with_format("arrow")[:]
    raise TypeError(f"expected a pyarrow Table, pandas DataFrame or datasets.Dataset, got {type(source).__name__}")


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
    source: str | os.PathLike | pa.Table | pd.DataFrame | datasets.Dataset,
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
    dictionary_ids: bool = False,
) -> pa.Table:
    """Read interactions (a file, or a table in memory) into an Arrow table with canonical columns.

    ``columns`` maps canonical names (``user``, ``item``, ``timestamp``, ``rating`` ...) to the
    source's names; unmapped canonical names are looked up as they are. Ids follow the module's
    policy (whitespace trimmed, integer columns in plain form) unless ``integer_ids`` demands
    integers; ``timestamp`` must be a finite number or a date (read as Unix seconds). Every
    problem raises :class:`DataFormatError` naming the file, the place and the column: the line
    of a CSV/TSV file (the header is line 1), the 1-based row of a Parquet or JSON (Lines) file.
    For an in-memory ``source`` parsed from a file, ``label`` names that file and ``first_line``
    is the number of its first row. Other columns are dropped unless ``extra`` (item tables keep
    their side information). ``dictionary_ids`` returns ``user`` and ``item`` dictionary-encoded
    (each row a code into the distinct ids, each id once), as the data modules take them: the
    ids were encoded to check them, and encoding 20M of them again costs seconds.
    """
    columns = dict(columns or {})
    if isinstance(source, (pa.Table, pd.DataFrame)) or _is_dataset(source):
        kind = "Dataset" if _is_dataset(source) else type(source).__name__
        raw, rows = to_arrow(source), _Rows(label or f"<{kind}>", first_line)
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; pass the path of an interactions file")
        encoded = [str(columns.get(c, c)) for c in REQUIRED] if dictionary_ids else []
        raw, rows = _reader(path, sep, header, names, encoded)
    if raw.num_rows == 0:
        raise DataFormatError(f"{rows.label}: no interactions (only a header, or empty); add at least one row")
    rename = {}
    for canonical in dict.fromkeys([*required, *columns]):
        source_name = str(columns.get(canonical, canonical))
        if source_name not in raw.column_names:
            if canonical in required or canonical in columns:
                found = ", ".join(raw.column_names)
                raise DataFormatError(
                    f"{rows.label}: missing column {source_name!r} (the {canonical!r} field); columns found: {found}. "
                    f"Pass columns={{'{canonical}': '<your column>'}} to map it.{_header_separator(raw, rows)}"
                )
            continue
        rename[source_name] = canonical
    if "timestamp" not in rename.values() and "timestamp" in raw.column_names:
        rename["timestamp"] = "timestamp"
    keep = [c for c in raw.column_names if c in rename or (extra and c not in rename.values())]
    table = raw.select(keep).rename_columns([rename.get(c, c) for c in keep])
    ids = {c: Distinct.of(table.column(c)) for c in ("user", "item") if c in table.column_names}
    _check_repeated_header(ids, rename, rows)
    for canonical, distinct in ids.items():
        missing = pc.is_null(distinct.values, nan_is_null=True)
        if _is_text(distinct.values.type):
            missing = pc.or_(missing, pc.equal(pc.utf8_trim_whitespace(distinct.values), ""))
        index = distinct.first(missing.to_numpy(zero_copy_only=False), missing=True)
        if index is not None:
            raise DataFormatError(
                _whole_row(raw, index, rows)
                or f"{rows(index)}, column {canonical!r}: empty id; every interaction needs a user and an item "
                "(drop incomplete rows first)"
            )
    for canonical, distinct in ids.items():
        column = table.column(canonical)
        if integer_ids:
            read = _as_integers(column, distinct, rows, canonical, raw)
        else:
            read = _normalise_ids(distinct, rows, canonical)
        if dictionary_ids:
            read_ids = distinct if read is None else distinct.renamed(read)
            column = pa.DictionaryArray.from_arrays(pa.array(read_ids.codes), read_ids.values)
        else:
            column = _decoded(column) if read is None else distinct.to_rows(read)
        table = _replace(table, canonical, column)
    if "timestamp" in table.column_names:
        table = _replace(table, "timestamp", pa.array(_as_time(_decoded(table.column("timestamp")), rows, raw)))
    if "rating" in table.column_names:
        table = _replace(table, "rating", pa.array(_as_number(_decoded(table.column("rating")), rows, "rating", raw)))
    return table


def _replace(table: pa.Table, name: str, column: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def _whole_row(raw: pa.Table, index: int, rows: _Rows) -> str | None:
    """When a field of a delimited text is wrong, what may be wrong with its whole line: blank,
    or written with another separator (pandas then reads it as one field and empty ones)."""
    if rows.sep is None:
        return None
    fields = _fields(raw, index)
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


def _header_separator(raw: pa.Table, rows: _Rows) -> str:
    """A hint when a delimited text's header was read as one column: it uses another separator."""
    if rows.sep is None or raw.num_columns != 1:
        return ""
    others = [s for s in SEPARATORS if s != rows.sep and s in raw.column_names[0]]
    return f" The header seems separated by {others[0]!r}: pass sep={others[0]!r}." if others else ""


def _check_repeated_header(ids: dict[str, Distinct], rename: dict[str, str], rows: _Rows) -> None:
    inverse = {v: k for k, v in rename.items()}
    keys = [c for c in ids if c in inverse]
    if not keys:
        return
    same = np.ones(len(ids[keys[0]].codes), dtype=bool)
    for canonical in keys:
        values = ids[canonical].values
        if not _is_text(values.type):
            return  # numbers cannot repeat a header's names
        named = pc.fill_null(pc.equal(values, inverse[canonical]), False).to_numpy(zero_copy_only=False)
        same &= np.append(named, False)[ids[canonical].codes]
    if same.any():
        index = int(np.argmax(same))
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


def _normalise_ids(distinct: Distinct, rows: _Rows, name: str) -> pa.Array | None:
    """The module's id policy, applied to the distinct values (ids repeat, so this is cheap):
    the id each distinct value reads as, or None where the column stands as it is."""
    if pa.types.is_integer(distinct.values.type):
        return None
    if pa.types.is_floating(distinct.values.type):
        numbers = distinct.values.to_numpy(zero_copy_only=False)
        if bool((np.isfinite(numbers) & (numbers == np.floor(numbers))).all()):
            return pc.cast(distinct.values, pa.int64())  # integers in a float column (pandas writes gaps so)
    # one type (JSON may mix 123 and "A12"), or ids cannot be sorted
    if _is_text(distinct.values.type):
        spelled = distinct.values
    else:  # as Python writes them ("1.0", where Arrow's cast would write "1")
        spelled = pa.array(distinct.values.to_pandas().astype(str), pa.string())
    text = pc.utf8_trim_whitespace(spelled)
    integer = pc.match_substring_regex(text, f"^{INTEGER_ID.pattern}$")
    plain = pc.replace_substring_regex(pc.replace_substring_regex(text, r"^\+|\.0*$", ""), "^-0$", "0")
    if pc.all(integer).as_py():
        read = plain
    else:
        read = text
        numeric = pd.DataFrame(
            {"plain": plain.filter(integer).to_pylist(), "text": text.filter(integer).to_pylist()},
            index=np.flatnonzero(integer.to_numpy(zero_copy_only=False)),
        )
        numeric = numeric.drop_duplicates("text")
        twice = numeric[numeric["plain"].duplicated(keep=False)]
        if len(twice):
            a, b = twice.index[twice["plain"] == twice["plain"].iloc[0]][:2]
            line_a, line_b = (int(np.argmax(distinct.codes == i)) for i in (a, b))
            raise DataFormatError(
                f"{rows(line_a)}, column {name!r}: {spelled[a].as_py()!r} and {spelled[b].as_py()!r} ({rows.unit} "
                f"{line_b + rows.first}) are one integer written two ways among ids that are not all integers, so "
                f"they may name one {name} or two; write each id one way throughout the file"
            )
    if read.equals(spelled):
        return None if _is_text(distinct.values.type) else read  # no id respelled, none merged
    ids = pd.Series(read.to_numpy(zero_copy_only=False), dtype=object)
    same = ids[ids.duplicated(keep=False)]
    if len(same):
        a, b = same.index[same == same.iloc[0]][:2]
        warnings.warn(
            f"{rows.label}, column {name!r}: {name} ids written in more than one way: {same.nunique()} (e.g. "
            f"{spelled[a].as_py()!r} and {spelled[b].as_py()!r}); each is read as one id (whitespace trimmed, "
            "integers in plain form)",
            stacklevel=2,
        )
    return read


def _shown(column: pa.ChunkedArray, index: int) -> str:
    """Row ``index``'s value as the file holds it (``inf``, ``'soon'``)."""
    return repr(column[index].as_py())


def _to_numeric(column: pa.Array | pa.ChunkedArray, exact_integers: bool = False) -> np.ndarray:
    """The column's numbers, NaN where a value is none, through Arrow's cast when every value
    parses (40x faster than ``pd.to_numeric`` on a column of number strings). A column with
    anything Arrow refuses (blanks, spaces, words, ``1.0`` for an integer) takes
    ``pd.to_numeric`` on its distinct values; the callers turn NaNs into errors naming the row."""
    try:
        cast = pc.cast(column, pa.int64() if exact_integers else pa.float64())
        if not cast.null_count:
            return cast.to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    distinct = Distinct.of(column)
    numbers = pd.to_numeric(distinct.values.to_pandas(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.append(numbers, np.nan)[distinct.codes]


def _as_integers(column: pa.ChunkedArray, distinct: Distinct, rows: _Rows, name: str, raw: pa.Table) -> pa.Array:
    """The integer id of each distinct value; one that is no integer raises naming its first row."""
    numbers = _to_numeric(distinct.values, exact_integers=True)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers)) | (np.abs(numbers) >= 2.0**63)  # beyond int64
    index = distinct.first(bad)
    if index is not None:
        raise DataFormatError(
            _whole_row(raw, index, rows)
            or f"{rows(index)}, column {name!r}: {_shown(column, index)} is not an integer id; this format "
            "stores integer ids, so fix the row or read the file with the generic loader"
        )
    return pa.array(numbers.astype(np.int64))


def _as_number(column: pa.ChunkedArray, rows: _Rows, name: str, raw: pa.Table) -> np.ndarray:
    numbers = _to_numeric(column).astype(np.float64)
    bad = ~np.isfinite(numbers)
    if bool(bad.any()):
        index = int(np.argmax(bad))
        what = "is not a number" if np.isnan(numbers[index]) else "is not a finite number"
        raise DataFormatError(
            _whole_row(raw, index, rows)
            or f"{rows(index)}, column {name!r}: {_shown(column, index)} {what}; fix or drop the row"
        )
    return numbers


def _as_time(column: pa.ChunkedArray, rows: _Rows, raw: pa.Table) -> np.ndarray:
    """Times in Unix seconds: numbers as they are, dates (ISO 8601 text, date or time columns) converted."""
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("s"))
    if pa.types.is_timestamp(column.type):  # Parquet times; pyarrow reads ISO dates in JSON Lines as times
        column = pc.cast(pc.cast(column, pa.timestamp("s", column.type.tz), safe=False), pa.int64())
    numbers = _to_numeric(column).astype(np.float64)
    if not np.isnan(numbers).any():
        infinite = ~np.isfinite(numbers)
        if bool(infinite.any()):
            index = int(np.argmax(infinite))
            raise DataFormatError(
                f"{rows(index)}, column 'timestamp': {_shown(column, index)} is not a finite time, so the row "
                "cannot be ordered; give its time in Unix seconds or as an ISO 8601 date, or drop the row"
            )
        return numbers
    distinct = Distinct.of(column)
    values = distinct.values.to_pandas()
    with warnings.catch_warnings():  # "could not infer format": the values that miss it are parsed one by one
        warnings.simplefilter("ignore", UserWarning)
        seconds = _seconds(pd.to_datetime(values, errors="coerce", utc=True))
        retry = np.isnan(seconds) & values.notna().to_numpy()
        if retry.any():  # pandas infers one format from the first date; others ("2020-01-01T10:00Z") need their own
            seconds[retry] = _seconds(pd.to_datetime(values[retry], errors="coerce", utc=True, format="mixed"))
    undated = np.append(np.isnan(seconds), True)[distinct.codes]
    if not undated.any():
        return seconds[distinct.codes]
    bad = np.isnan(numbers) & undated
    index = int(np.argmax(bad)) if bad.any() else int(np.argmax(np.isnan(numbers)))
    raise DataFormatError(
        _whole_row(raw, index, rows)
        or f"{rows(index)}, column 'timestamp': {_shown(column, index)} is neither a number nor a date; use Unix "
        "seconds or ISO 8601 dates throughout the column"
    )


def _seconds(dates: pd.Series) -> np.ndarray:
    """Unix seconds of UTC dates, NaN where none, whatever pandas' time resolution (it is not
    always nanoseconds)."""
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return np.array(seconds.to_numpy(dtype=np.float64, na_value=np.nan))  # writable


def as_columns(table: pa.Table | pd.DataFrame | datasets.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a table as numpy arrays (the form the splitters work on)."""
    data = to_arrow(table)
    return {name: data.column(name).to_numpy() for name in names if name in data.column_names}
