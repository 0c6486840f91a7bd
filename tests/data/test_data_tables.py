"""Malformed input: every error names the file, the row and column, and says how to fix it. The
place is the line of a CSV/TSV file (the header is line 1) and the 1-based row of a Parquet or
JSON Lines file."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from attnrec.data import AmazonReviewsDataModule, DataFormatError, InteractionDataModule, MovieLensDataModule


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def ml100k(tmp_path: Path, u_data: str) -> MovieLensDataModule:
    """A MovieLens 100K folder whose ``u.data`` holds ``u_data``."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    write(folder / "u.data", u_data)
    return MovieLensDataModule(path=str(folder))


def load_csv(path: Path, **kwargs) -> InteractionDataModule:
    module = InteractionDataModule(path=str(path), **kwargs)
    module.setup()
    return module


def test_missing_column_names_file_column_and_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,product,timestamp\n1,2,3\n")
    with pytest.raises(
        DataFormatError, match=r"log\.csv: missing column 'item'.*columns found: user, product, timestamp.*columns="
    ):
        load_csv(path)
    # the suggested fix works
    assert load_csv(path, columns={"item": "product"}).num_items == 1


def test_non_integer_id_in_an_integer_format(tmp_path: Path) -> None:
    module = ml100k(tmp_path, "1\t10\t5\t100\n1\tx7\t4\t101\n")
    with pytest.raises(DataFormatError, match=r"u\.data, row 2, column 'item': 'x7' is not an integer id"):
        module.setup()


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"empty\.csv: the file is empty"):
        load_csv(write(tmp_path / "empty.csv", ""))
    module = ml100k(tmp_path, "")
    with pytest.raises(DataFormatError, match=r"u\.data: the file is empty"):
        module.setup()


def test_header_only_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"head\.csv: no interactions .*add at least one row"):
        load_csv(write(tmp_path / "head.csv", "user,item,timestamp\n"))
    inter = write(tmp_path / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter: no interactions"):
        MovieLensDataModule(path=str(inter)).setup()


def test_repeated_header_row(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,3\n1,3,4\nuser,item,timestamp\n2,2,5\n"
    with pytest.raises(
        DataFormatError, match=r"twice\.csv, line 4: repeats the header line.*delete the repeated header"
    ):
        load_csv(write(tmp_path / "twice.csv", text))
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter = write(tmp_path / "ml-100k.inter", header + "1\t2\t3\t4\n" + header + "2\t2\t3\t5\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter, row 3: repeats the header line"):
        MovieLensDataModule(path=str(inter)).setup()


def test_blank_lines_inside_data_are_reported_where_they_are(tmp_path: Path) -> None:
    module = ml100k(tmp_path, "1\t10\t5\t100\n\n1\t11\t4\t101\n")
    with pytest.raises(DataFormatError, match=r"u\.data, line 2: blank line inside the data; delete it"):
        module.setup()
    write(tmp_path / "ml-100k" / "u.data", "1\t10\t5\t100\r\n1\t11\t4\t101\r\n1\tz\t4\t102\r\n\r\n\n")  # CRLF, trailing blanks
    with pytest.raises(DataFormatError, match=r"u\.data, row 3, column 'item': 'z' is not an integer id"):
        MovieLensDataModule(path=str(tmp_path / "ml-100k")).setup()


def test_bad_timestamp(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,100\n1,3,yesterday\n"
    with pytest.raises(
        DataFormatError, match=r"time\.csv, line 3, column 'timestamp': 'yesterday' is neither.*ISO 8601"
    ):
        load_csv(write(tmp_path / "time.csv", text))


def test_dates_are_accepted_as_timestamps(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,2020-01-02\n1,3,2020-01-01\n1,4,2020-01-03\n"
    module = load_csv(write(tmp_path / "dates.csv", text))
    assert module.item_map.raw[module.split_data.test[1][0]] == "4"  # the latest date is the test item


def test_empty_id(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,100\n,3,101\n"
    with pytest.raises(DataFormatError, match=r"noid\.csv, line 3, column 'user': empty id"):
        load_csv(write(tmp_path / "noid.csv", text))


def test_parquet_and_json_lines_errors_name_the_exact_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user": ["1", "", "2"], "item": ["2", "3", "4"], "timestamp": [100, 101, 102]})
    frame.to_parquet(tmp_path / "log.parquet")
    with pytest.raises(DataFormatError, match=r"log\.parquet, row 2, column 'user': empty id"):
        load_csv(tmp_path / "log.parquet")
    write(tmp_path / "log.jsonl", frame.to_json(orient="records", lines=True))
    with pytest.raises(DataFormatError, match=r"log\.jsonl, row 2, column 'user': empty id"):
        load_csv(tmp_path / "log.jsonl")
    frame.assign(user="1", timestamp=["100", "101", "soon"]).to_parquet(tmp_path / "time.parquet")
    with pytest.raises(DataFormatError, match=r"time\.parquet, row 3, column 'timestamp': 'soon'"):
        load_csv(tmp_path / "time.parquet")


def test_csv_line_numbers_stay_exact_after_a_blank_line(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,100\n\n1,,101\n"
    with pytest.raises(DataFormatError, match=r"gap\.csv, line 3: blank line inside the data; delete it"):
        load_csv(write(tmp_path / "gap.csv", text))
    assert load_csv(write(tmp_path / "end.csv", "user,item,timestamp\n1,2,100\n1,3,101\n\n\n")).num_interactions == 2


def test_non_finite_times_are_refused(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,100\n1,3,inf\n"
    with pytest.raises(
        DataFormatError, match=r"inf\.csv, line 3, column 'timestamp': 'inf' is not a finite time.*Unix seconds"
    ):
        load_csv(write(tmp_path / "inf.csv", text))
    frame = pd.DataFrame({"user": ["1", "1"], "item": ["2", "3"], "timestamp": [100.0, -np.inf]})
    frame.to_parquet(tmp_path / "inf.parquet")
    with pytest.raises(DataFormatError, match=r"inf\.parquet, row 2, column 'timestamp': -?inf is not a finite time"):
        load_csv(tmp_path / "inf.parquet")


def test_a_line_with_another_separator_is_named_as_such(tmp_path: Path) -> None:
    text = "user,item,timestamp\n1,2,100\n1\t3\t101\n"
    with pytest.raises(
        DataFormatError, match=r"mixed\.csv, line 3: fields separated by '\\t', but the file's separator is ','"
    ):
        load_csv(write(tmp_path / "mixed.csv", text))
    with pytest.raises(DataFormatError, match=r"missing column 'user'.*The header seems separated by ';': pass sep=';'"):
        load_csv(write(tmp_path / "semi.csv", "user;item;timestamp\n1;2;100\n"))


def test_amazon_json_errors_name_line_and_field(tmp_path: Path) -> None:
    good = {"reviewerID": "A", "asin": "B1", "overall": 5.0, "unixReviewTime": 10}
    lines = [json.dumps(good), "", json.dumps({**good, "asin": ""})]
    path = tmp_path / "Beauty_5.json.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"Beauty_5\.json\.gz, line 3, column 'asin': empty id"):
        AmazonReviewsDataModule(path=str(path)).setup()
    missing = {k: v for k, v in good.items() if k != "unixReviewTime"}
    write(path, json.dumps(good) + "\n" + json.dumps(missing) + "\n")  # plain text under a .gz name
    with pytest.raises(
        DataFormatError, match=r"line 2, column 'unixReviewTime': missing.*keys found: reviewerID, asin"
    ):
        AmazonReviewsDataModule(path=str(path)).setup()
    write(path, json.dumps(good) + "\n" + json.dumps({**good, "unixReviewTime": "soon"}) + "\n")
    with pytest.raises(DataFormatError, match=r"line 2, column 'unixReviewTime': 'soon' is not a number"):
        AmazonReviewsDataModule(path=str(path)).setup()
    write(path, json.dumps(good) + "\n{'reviewerID': 'A', 'asin'\n")
    with pytest.raises(DataFormatError, match=r"line 2: neither JSON nor a Python literal"):
        AmazonReviewsDataModule(path=str(path)).setup()


def test_amazon_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"ratings_Beauty\.csv: the file is empty"):
        AmazonReviewsDataModule(path=str(write(tmp_path / "ratings_Beauty.csv", ""))).setup()
    path = write(tmp_path / "ratings_Toys.csv", "A,B1,5.0,100\nA,B2,five,101\n")
    with pytest.raises(
        DataFormatError, match=re.escape("ratings_Toys.csv, row 2, column 'rating': 'five' is not a number")
    ):
        AmazonReviewsDataModule(path=str(path)).setup()
    header = "user_id,parent_asin,rating,timestamp\n"
    with pytest.raises(DataFormatError, match=r"All_Beauty\.csv: no interactions"):
        AmazonReviewsDataModule(path=str(write(tmp_path / "All_Beauty.csv", header))).setup()
    path = write(tmp_path / "Software.csv", header + "A,B1,5.0,1000\n" + header + "B,B1,4.0,2000\n")
    with pytest.raises(DataFormatError, match=r"Software\.csv, row 3: repeats the header line"):
        AmazonReviewsDataModule(path=str(path)).setup()


def test_missing_file_and_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.zip: no such file"):
        MovieLensDataModule(path=str(tmp_path / "nowhere.zip")).setup()
    with pytest.raises(ValueError, match=r"unknown MovieLens variant '20m'; choose one of \['100k', '1m'\]"):
        MovieLensDataModule(variant="20m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no Amazon ratings file is published for version '2023'; available: .*2018"):
        AmazonReviewsDataModule(category="All_Beauty", version="2023", kind="ratings")


def test_dates_are_read_as_unix_seconds(tmp_path: Path) -> None:
    from attnrec.data import read_table

    path = write(tmp_path / "dates.csv", "user,item,timestamp\n1,2,2020-01-02\n1,3,2020-01-01T00:00:01Z\n")
    assert read_table(str(path))["timestamp"].to_pylist() == [1577923200.0, 1577836801.0]
    times = pd.to_datetime(["2020-01-02", "2020-01-01"])
    pd.DataFrame({"user": ["1", "1"], "item": ["2", "3"], "timestamp": times}).to_parquet(tmp_path / "dates.parquet")
    assert read_table(str(tmp_path / "dates.parquet"))["timestamp"].to_pylist() == [1577923200.0, 1577836800.0]


def test_integer_ids_beyond_int64_are_refused() -> None:
    from attnrec.data import read_table

    frame = pd.DataFrame({"user": ["1", "12345678901234567890"], "item": ["2", "3"]})
    with pytest.raises(DataFormatError, match=r"<DataFrame>, row 2, column 'user': '12345678901234567890' is not an"):
        read_table(frame, integer_ids=True)


def test_tables_in_memory_are_read_alike_and_as_arrow() -> None:
    import datasets
    import pyarrow as pa
    from attnrec.data import read_table

    frame = pd.DataFrame({"user": [" 1", "1.0", "2"], "item": ["a", "b", "a"], "timestamp": [3, 2, 1]})
    with pytest.warns(UserWarning, match=r"user ids written in more than one way"):
        sources = (frame, pa.Table.from_pandas(frame), datasets.Dataset.from_pandas(frame))
        tables = [read_table(source) for source in sources]
    assert all(isinstance(table, pa.Table) and table.equals(tables[0]) for table in tables)
    assert tables[0].to_pydict() == {"user": ["1", "1", "2"], "item": ["a", "b", "a"], "timestamp": [3.0, 2.0, 1.0]}
    with pytest.raises(DataFormatError, match=r"<Dataset>, row 2, column 'item': empty id"):
        read_table(datasets.Dataset.from_dict({"user": ["1", "2"], "item": ["a", " "]}))


def test_a_parquet_files_pandas_index_is_no_column(tmp_path: Path) -> None:
    from attnrec.data import read_table

    frame = pd.DataFrame({"item": ["a", "b"], "title": ["A", "B"]}, index=[5, 7])
    frame.to_parquet(tmp_path / "items.parquet")
    assert read_table(str(tmp_path / "items.parquet"), required=("item",), extra=True).column_names == ["item", "title"]


@pytest.mark.parametrize(
    "text, integer_ids",
    [
        ("user,item,timestamp\n 1,a,1\n1.0,b,2\n+2,a,3\n2,c,4\n1,a,5\n", False),  # respelled integers merge
        ("user,item,timestamp\nu1,a,1\nu1 ,b,2\nu2,a,3\nu1,a,4\n", False),  # whitespace merges
        ("user,item,timestamp\nu1,a,1\nu2,b,2\nu1,a,3\n", False),  # nothing respelled
        ("user,item,timestamp\n1,7,1\n01,7.0,2\n2,8,3\n", True),  # integer ids
    ],
)
def test_dictionary_ids_are_the_plain_ids_encoded(tmp_path: Path, text: str, integer_ids: bool) -> None:
    import warnings

    from attnrec.data import read_table

    path = write(tmp_path / "log.csv", text)
    read = {}
    for encoded in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read[encoded] = read_table(str(path), integer_ids=integer_ids, dictionary_ids=encoded)
        read[encoded, "warnings"] = [str(w.message) for w in caught]
    plain, encoded = read[False], read[True]
    assert read[True, "warnings"] == read[False, "warnings"]
    for name in ("user", "item"):
        column = encoded[name].chunk(0)
        assert column.type.value_type == plain[name].type and column.dictionary.to_pylist() == list(
            dict.fromkeys(plain[name].to_pylist())
        )  # each id once, in order of first appearance
        assert column.dictionary_decode().to_pylist() == plain[name].to_pylist()
    assert encoded["timestamp"].equals(plain["timestamp"])


def test_distinct_ids_of_a_dictionary_column_are_those_of_its_values() -> None:
    import pyarrow as pa
    from attnrec.data.tables import Distinct

    chunks = [
        pa.DictionaryArray.from_arrays(pa.array([1, 0, None, 1], pa.int32()), pa.array(["b", "a"])),
        pa.DictionaryArray.from_arrays(pa.array([0, 2, 1, 2], pa.int32()), pa.array(["c", "a", "b"])),
        pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array(["d", "d"])),  # one value twice
    ]
    column = pa.chunked_array(chunks)
    ours, theirs = Distinct.of(column), Distinct.of(column.cast(pa.string()))
    assert ours.codes.tolist() == theirs.codes.tolist() == [0, 1, -1, 0, 2, 1, 0, 1, 3, 3]  # a b - a c b a b d d
    assert ours.values.equals(theirs.values)


def test_categorical_ids_read_as_their_values(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from attnrec.data import read_table

    frame = pd.DataFrame({"user": ["u2", "u1 ", "u1", "u2", "u3"], "item": ["a", "b", "a", "c", "c"]})
    categorical = frame.astype("category")
    pq.write_table(pa.Table.from_pandas(categorical), tmp_path / "log.parquet", row_group_size=2)  # 3 dictionaries
    with pytest.warns(UserWarning, match=r"'user': user ids written in more than one way: 1 \(e\.g\. 'u1 ' and 'u1'\)"):
        tables = [read_table(frame), read_table(categorical), read_table(str(tmp_path / "log.parquet"))]
    assert all(table.to_pydict() == tables[0].to_pydict() for table in tables)
