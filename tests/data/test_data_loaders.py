"""The public data-set loaders on tiny local files written in each published format."""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from attnrec import builtin
from attnrec.data import (
    AmazonReviewsDataModule,
    ChecksumError,
    DataFormatError,
    InteractionDataModule,
    MovieLensDataModule,
    amazon,
    movielens,
)  # fmt: skip
from attnrec.plugins import Registry

# (user, item, rating, timestamp): user 1's last item is 3, user 2's is 1, user 3 rates low
RATINGS = [
    (1, 1, 5, 100), (1, 2, 4, 101), (1, 4, 2, 102), (1, 3, 5, 103),
    (2, 2, 3, 200), (2, 4, 4, 201), (2, 1, 5, 202),
    (3, 2, 1, 300), (3, 3, 2, 301), (3, 1, 1, 302),
]  # fmt: skip
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
MOVIES = {1: ("Toy Story (1995)", ["Animation", "Comedy"]), 2: ("Heat (1995)", ["Action", "Crime"]),
          3: ('Amélie "Le Fabuleux" (2001)', ["Comedy", "Romance"]), 4: ("Untitled (1990)", [])}  # fmt: skip


def u_item() -> bytes:
    lines = []
    for item, (title, genres) in MOVIES.items():
        flags = ["1" if g in genres else "0" for g in GENRES]
        lines.append("|".join([str(item), title, "01-Jan-1995", "", "http://imdb"] + flags))
    return ("\n".join(lines) + "\n").encode("latin-1")


def ml100k_files() -> dict[str, bytes]:
    genre = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)).encode()
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS).encode()
    return {"u.data": data, "u.item": u_item(), "u.genre": genre}


def ml1m_files() -> dict[str, bytes]:
    ratings = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS).encode()
    movies = "".join(f"{i}::{title}::{'|'.join(g)}\n" for i, (title, g) in MOVIES.items()).encode("latin-1")
    return {"ratings.dat": ratings, "movies.dat": movies}


def write_zip(path: Path, folder: str, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
    return path


def check_movielens(dm: MovieLensDataModule) -> None:
    dm.setup()
    catalog = dm.catalog
    assert (dm.num_users, dm.num_items, dm.num_interactions) == (3, 4, 10)
    assert catalog.raw_ids == [None, 1, 2, 3, 4]
    assert catalog.titles[3] == 'Amélie "Le Fabuleux" (2001)'  # latin-1 and a bare quote
    # first genres Animation, Action, Comedy coded in sorted order; 0 = padding and no genre
    assert catalog.features["category"].tolist() == [0, 2, 1, 3, 0]
    assert catalog.title(1) == "Toy Story (1995)"
    assert [int(x) for x in dm.split_data.test[dm.user_map.index(1)]] == [3]
    assert dm.protocol["data"] == f"ml-{dm.variant}"


def test_movielens_100k_zip_and_folder(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "ml-100k.zip", "ml-100k", ml100k_files())
    check_movielens(MovieLensDataModule(path=str(archive)))
    folder = tmp_path / "extracted" / "ml-100k"
    folder.mkdir(parents=True)
    for name, data in ml100k_files().items():
        (folder / name).write_bytes(data)
    check_movielens(MovieLensDataModule(path=str(folder.parent)))  # found below the given folder
    check_movielens(MovieLensDataModule(path=str(folder / "u.data")))  # the ratings file names its folder


def test_movielens_path_to_another_file_says_what_path_takes(tmp_path: Path) -> None:
    """Pointing path= at a file that is no release used to be called a broken download to delete."""
    other = tmp_path / "ratings.csv"
    other.write_text("user,item\n1,2\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv: not a zip, a folder or an \.inter file; path= takes") as error:
        MovieLensDataModule(path=str(other)).setup()
    assert "delete" not in str(error.value)


def test_movielens_1m_zip(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "ml-1m.zip", "ml-1m", ml1m_files())
    dm = MovieLensDataModule(variant="1m", path=str(archive))
    check_movielens(dm)
    assert dm.name == "ml-1m"
    with pytest.raises(DataFormatError, match=r"found neither u\.data .*ratings\.dat.*Is variant= right\?"):
        MovieLensDataModule(variant="100k", path=str(archive)).setup()


def test_movielens_recbole_atomic_files(tmp_path: Path) -> None:
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    for i, (title, genres) in MOVIES.items():
        item += f"{i}\t{title[:-7]}\t{title[-5:-1]}\t{' '.join(genres)}\n"
    (tmp_path / "ml-100k.inter").write_text(inter)
    (tmp_path / "ml-100k.item").write_text(item)
    check_movielens(MovieLensDataModule(path=str(tmp_path)))
    check_movielens(MovieLensDataModule(path=str(tmp_path / "ml-100k.inter")))
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter: holds ml-100k, but variant='1m'; set variant='100k'"):
        MovieLensDataModule(variant="1m", path=str(tmp_path)).setup()


def test_movielens_rating_threshold(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "ml-100k.zip", "ml-100k", ml100k_files())
    dm = MovieLensDataModule(path=str(archive), min_rating=4)
    dm.setup()
    assert dm.num_interactions == sum(r >= 4 for _, _, r, _ in RATINGS)
    assert dm.num_users == 2  # user 3 rated nothing 4 or more
    assert dm.protocol["filtering"] == "rating >= 4"
    dm = MovieLensDataModule(path=str(archive), min_rating=3, k_core=2)
    assert dm.protocol["filtering"] == "2-core after rating >= 3"
    assert (dm.num_users, dm.num_items, dm.num_interactions) == (2, 2, 4)


def test_movielens_downloads_verifies_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = write_zip(tmp_path / "published.zip", "ml-100k", ml100k_files())
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    release = movielens.RELEASES["100k"]
    published = movielens._Release(archive.as_uri(), digest, release.ratings, release.movies, release.sep)
    monkeypatch.setitem(movielens.RELEASES, "100k", published)
    monkeypatch.setenv("ATTNREC_DATA", str(tmp_path / "cache"))
    check_movielens(MovieLensDataModule())
    assert (tmp_path / "cache" / "movielens" / "published.zip").read_bytes() == archive.read_bytes()
    wrong = movielens._Release(archive.as_uri(), "0" * 32, release.ratings, release.movies, release.sep)
    monkeypatch.setitem(movielens.RELEASES, "100k", wrong)
    with pytest.raises(ChecksumError, match=f"md5 is {digest}, expected {'0' * 32}.*delete"):
        MovieLensDataModule().setup()


def write_lines(path: Path, records: list, gz: bool, literal: bool = False) -> Path:
    text = "".join((repr(r) if literal else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def old_reviews() -> list[dict]:
    return [{"reviewerID": f"A{u}", "asin": f"B00{i}", "overall": float(r), "unixReviewTime": t,
             "reviewText": "fine", "helpful": [0, 0]} for u, i, r, t in RATINGS]  # fmt: skip


def check_amazon(dm: AmazonReviewsDataModule, with_meta: bool = True) -> None:
    dm.setup()
    catalog = dm.catalog
    assert (dm.num_users, dm.num_items, dm.num_interactions) == (3, 4, 10)
    assert catalog.raw_ids == [None, "B001", "B002", "B003", "B004"]
    assert dm.item_map.raw[dm.split_data.test[dm.user_map.index("A1")][0]] == "B003"
    if with_meta:
        assert catalog.titles[1:] == ["Lipstick", "Shampoo", "Brush", ""]  # B004 has no metadata
        category = catalog.features["category"].tolist()
        assert category[0] == category[4] == 0 and category[1] == category[3] != category[2] > 0
        assert catalog.features["price"].tolist() == pytest.approx([0.0, 12.5, 3.0, 0.0, 0.0])


def test_amazon_2018_gzipped_json_with_metadata(tmp_path: Path) -> None:
    repeated = old_reviews()[:2]  # the published files repeat some reviews verbatim
    reviews = write_lines(tmp_path / "Luxury_Beauty_5.json.gz", old_reviews() + repeated, gz=True)
    meta = write_lines(tmp_path / "meta_Luxury_Beauty.json.gz", [
        {"asin": "B001", "title": "Lipstick", "main_cat": "Makeup", "brand": "Acme", "price": "$12.50"},
        {"asin": "B002", "title": "Shampoo", "main_cat": "Hair", "brand": "", "price": "$3.00"},
        {"asin": "B003", "title": "Brush", "main_cat": "Makeup", "price": "$1.00 - $4.00"},
        {"asin": "B999", "title": "Never reviewed", "main_cat": "Other"},
    ], gz=True)  # fmt: skip
    dm = AmazonReviewsDataModule(path=str(reviews), metadata_path=str(meta))
    check_amazon(dm)
    assert dm.catalog.features["brand"].tolist() == [0, 1, 0, 0, 0]
    assert dm.protocol["filtering"] == "2 duplicate reviews dropped"


def test_amazon_2014_loose_json(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "reviews_Beauty_5.json", old_reviews(), gz=False, literal=True)
    assert reviews.read_text().startswith("{'reviewerID'")  # single quotes: not JSON
    meta = write_lines(tmp_path / "meta_Beauty.json.gz", [
        {"asin": "B001", "title": "Lipstick", "categories": [["Beauty", "Makeup", "Lips"]], "price": 12.5},
        {"asin": "B002", "title": "Shampoo", "categories": [["Beauty", "Hair Care"]], "price": 3.0},
        {"asin": "B003", "title": "Brush", "categories": [["Beauty", "Makeup"]], "salesRank": {"Beauty": 4}},
    ], gz=True, literal=True)  # fmt: skip
    check_amazon(AmazonReviewsDataModule(path=str(reviews), metadata_path=str(meta), version="2014"))


def test_amazon_2023_jsonl_milliseconds_and_parent_asin(tmp_path: Path) -> None:
    records = [{"user_id": f"A{u}", "asin": f"X{i}", "parent_asin": f"B00{i}", "rating": float(r),
                "timestamp": t * 1000 + 7, "verified_purchase": True} for u, i, r, t in RATINGS]  # fmt: skip
    reviews = write_lines(tmp_path / "All_Beauty.jsonl", records, gz=False)
    meta = write_lines(tmp_path / "meta_All_Beauty.jsonl.gz", [
        {"parent_asin": "B001", "title": "Lipstick", "main_category": "All Beauty", "store": "Acme", "price": 12.5},
        {"parent_asin": "B002", "title": "Shampoo", "main_category": "Hair", "price": 3.0},
        {"parent_asin": "B003", "title": "Brush", "main_category": "All Beauty", "price": None},
    ], gz=True)  # fmt: skip
    dm = AmazonReviewsDataModule(path=str(reviews), metadata_path=str(meta), version="2023")
    check_amazon(dm)
    times = dm.load().interactions["timestamp"].to_pylist()
    assert times[0] == pytest.approx(100.007)  # milliseconds became seconds


def test_amazon_ratings_csv(tmp_path: Path) -> None:
    (tmp_path / "ratings_Beauty.csv").write_text("".join(f"A{u},B00{i},{r}.0,{t}\n" for u, i, r, t in RATINGS))
    check_amazon(AmazonReviewsDataModule(path=str(tmp_path / "ratings_Beauty.csv")), with_meta=False)
    header = "user_id,parent_asin,rating,timestamp\n"
    rows_ms = "".join(f"A{u},B00{i},{r}.0,{t * 1000}\n" for u, i, r, t in RATINGS)
    (tmp_path / "All_Beauty.csv").write_text(header + rows_ms)
    dm = AmazonReviewsDataModule(path=str(tmp_path / "All_Beauty.csv"), min_rating=4)
    dm.setup()
    assert dm.num_interactions == sum(r >= 4 for _, _, r, _ in RATINGS)
    assert max(dm.load().interactions["timestamp"].to_pylist()) == 202.0  # milliseconds became seconds


def test_amazon_download_trusts_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "server"
    source.mkdir()
    write_lines(source / "Luxury_Beauty_5.json.gz", old_reviews(), gz=True)
    write_lines(source / "meta_Luxury_Beauty.json.gz", [{"asin": "B001", "title": "Lipstick"}], gz=True)
    monkeypatch.setitem(amazon.URLS, ("2018", "reviews"), source.as_uri() + "/{category}_5.json.gz")
    monkeypatch.setitem(amazon.METADATA_URLS, "2018", source.as_uri() + "/meta_{category}.json.gz")
    with pytest.warns(UserWarning, match="no published checksum"):
        dm = AmazonReviewsDataModule(category="Luxury_Beauty", root=str(tmp_path / "cache"))
        dm.setup()
    assert dm.catalog.titles[1] == "Lipstick" and dm.name == "amazon2018-Luxury_Beauty"
    assert dm.protocol["filtering"] == "5-core by the publisher"
    assert (tmp_path / "cache" / "Luxury_Beauty_5.json.gz.sha256").exists()
    with (tmp_path / "cache" / "Luxury_Beauty_5.json.gz").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ChecksumError, match="Luxury_Beauty_5.json.gz: sha256 is"):
        AmazonReviewsDataModule(category="Luxury_Beauty", root=str(tmp_path / "cache")).setup()


def test_loaders_are_registered_plugins() -> None:
    registry = Registry()
    registry.add_plugin(builtin, "builtin")
    assert {"MovieLensDataModule", "AmazonReviewsDataModule"} <= set(registry.names("data"))
    assert registry.get("data", "MovieLensDataModule") is MovieLensDataModule


def test_generic_loader_reads_an_item_table_and_mixed_ids(tmp_path: Path) -> None:
    lines = [{"user": u, "item": i if i % 2 else f"n{i}", "timestamp": t} for u, i, _, t in RATINGS]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "items.csv").write_text("item,title,category\n1,One,a\nn2,Two,b\n3,Three,a\n")
    dm = InteractionDataModule(path=str(tmp_path / "log.jsonl"), items_path=str(tmp_path / "items.csv"))
    dm.setup()
    assert dm.catalog.raw_ids == [None, "1", "3", "n2", "n4"]  # one id type, sorted
    assert dm.catalog.titles == ["", "One", "Three", "Two", ""]
    assert dm.catalog.features["category"].tolist() == [0, 1, 1, 2, 0]
