"""MovieLens-100K and -1M from GroupLens's zips, their extracted folders, or RecBole atomic files.

The MovieLens licence forbids redistribution, so nothing is bundled: with no ``path`` the zip
is downloaded from GroupLens into the cache (see :mod:`attnrec.data.download`) and checked
against the md5 GroupLens publishes next to it. Files are read straight from the zip.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .datamodule import Loaded, SequenceDataModule
from .download import cache_root, fetch
from .tables import DataFormatError, parse_delimited, read_table

Variant = Literal["100k", "1m"]


@dataclass(frozen=True)
class _Release:
    url: str
    md5: str  # published by GroupLens as <url>.md5
    ratings: str
    movies: str
    sep: str


RELEASES: dict[str, _Release] = {
    "100k": _Release(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723",
        "u.data", "u.item", "\t",
    ),
    "1m": _Release(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906",
        "ratings.dat", "movies.dat", "::",
    ),
}  # fmt: skip

# u.item's 19 genre flags, in the order of u.genre (used when u.genre is absent)
GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
RATING_COLUMNS = ["user", "item", "rating", "timestamp"]


class _Files:
    """Members of a zip or files of a folder, found by base name (zips nest them in ``ml-100k/``)."""

    def __init__(self, location: Path) -> None:
        self.location = location
        if location.is_dir():
            self._names = {p.name: p for p in location.rglob("*") if p.is_file()}
        else:
            try:
                with zipfile.ZipFile(location) as archive:
                    self._names = {Path(n).name: n for n in archive.namelist() if not n.endswith("/")}
            except zipfile.BadZipFile:
                raise DataFormatError(
                    f"{location}: not a readable zip file; delete it and run again to re-download, or pass the "
                    "extracted folder as path="
                ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def names(self) -> list[str]:
        return sorted(self._names)

    def label(self, name: str) -> str:
        member = self._names[name]
        return str(member) if isinstance(member, Path) else f"{self.location}:{member}"

    def read(self, name: str) -> bytes:
        member = self._names[name]
        if isinstance(member, Path):
            return member.read_bytes()
        with zipfile.ZipFile(self.location) as archive:
            return archive.read(member)


class MovieLensDataModule(SequenceDataModule):
    """MovieLens ratings as time-ordered interactions, with titles and a ``category`` feature
    (the first listed genre) in the catalog.

    ``path`` may be the GroupLens zip, its extracted folder, a folder of RecBole atomic files
    (``ml-100k.inter`` + ``ml-100k.item``, header ``name:type``) or such an ``.inter`` file;
    without it the zip is downloaded into ``root`` (default: the attnrec cache). MovieLens holds
    explicit 1-5 star ratings; every rating counts as an interaction unless ``min_rating`` is set,
    which keeps only ratings at or above it (``min_rating=4`` is the usual implicit-feedback
    reading "liked"); the protocol's filtering field records it.

    Split, window, sampling and loader arguments are :class:`SequenceDataModule`'s.

    Args:
        variant: which release, ``100k`` or ``1m``.
        root: where a download is cached (default: the attnrec cache, ``$ATTNREC_DATA``).
        path: a local copy instead of a download: the GroupLens zip (``ml-100k.zip``), its
            extracted folder or the ratings file in it (``u.data``, ``ratings.dat``), a folder
            of RecBole atomic files, or an ``.inter`` file.
        min_rating: keep only ratings at or above this (e.g. 4 for "liked"); default all.
    """

    def __init__(
        self,
        variant: Variant = "100k",
        root: str | None = None,
        path: str | None = None,
        min_rating: float | None = None,
        **kwargs: Any,
    ) -> None:
        if variant not in RELEASES:
            raise ValueError(f"unknown MovieLens variant {variant!r}; choose one of {sorted(RELEASES)}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.variant, self.root, self.source, self.min_rating = variant, root, path, min_rating

    @property
    def name(self) -> str:
        return f"ml-{self.variant}"

    def load(self) -> Loaded:
        release = RELEASES[self.variant]
        if self.source is None:
            folder = Path(self.root) if self.root else cache_root() / "movielens"
            location = fetch(release.url, folder, md5=release.md5)
        else:
            location = Path(os.path.expanduser(self.source))
            if not location.exists():
                raise FileNotFoundError(
                    f"{location}: no such file or folder; pass the ml-{self.variant} zip, its extracted folder or "
                    "RecBole .inter files as path=, or leave path unset to download"
                )
            if location.is_file() and location.name == release.ratings:
                location = location.parent  # the ratings file names its release folder, which holds the titles too
            elif location.is_file() and location.suffix != ".inter" and not zipfile.is_zipfile(location):
                raise DataFormatError(
                    f"{location}: not a zip, a folder or an .inter file; path= takes the ml-{self.variant} zip, its "
                    f"extracted folder (the one holding {release.ratings}) or a RecBole .inter file"
                )
        atomic = sorted(location.glob("*.inter")) if location.is_dir() else [location]
        atomic = [p for p in atomic if p.suffix == ".inter"]
        if atomic:
            wanted = [p for p in atomic if p.name == f"ml-{self.variant}.inter"]
            if len(atomic) > 1 and not wanted:
                names = ", ".join(p.name for p in atomic)
                raise DataFormatError(f"{location}: several .inter files ({names}); pass the one to read as path=")
            inter = (wanted or atomic)[0]
            if not wanted and inter.stem.startswith("ml-"):
                raise DataFormatError(
                    f"{inter}: holds {inter.stem}, but variant={self.variant!r}; set variant={inter.stem[3:]!r}"
                )
            interactions, items = self._read_atomic(inter, inter.with_suffix(".item"))
        else:
            files = _Files(location)
            if release.ratings in files:
                interactions, items = self._read_grouplens(files, release)
            else:
                raise DataFormatError(
                    f"{location}: found neither {release.ratings} (GroupLens ml-{self.variant}) nor a RecBole "
                    f".inter file; files present: {', '.join(files.names()[:10]) or 'none'}. Is variant= right?"
                )
        filtering = "none"
        if self.min_rating is not None:
            interactions = interactions.filter(pc.greater_equal(interactions.column("rating"), self.min_rating))
            filtering = f"rating >= {self.min_rating:g}"
            if len(interactions) == 0:
                raise DataFormatError(f"ml-{self.variant}: no rating is >= min_rating={self.min_rating:g}; lower it")
        return Loaded(interactions, items, filtering)

    def _read_grouplens(self, files: _Files, release: _Release) -> tuple[pa.Table, pa.Table | None]:
        name = release.ratings
        frame = parse_delimited(files.read(name), files.label(name), release.sep, RATING_COLUMNS)
        columns = {"rating": "rating", "timestamp": "timestamp"}
        interactions = read_table(frame, columns, integer_ids=True, label=files.label(name))
        if release.movies not in files:
            return interactions, None
        label = files.label(release.movies)
        if self.variant == "100k":
            genres = GENRES_100K
            if "u.genre" in files:
                table = parse_delimited(files.read("u.genre"), files.label("u.genre"), "|", ["genre", "index"])
                genres = table["genre"].tolist()
            names = ["item", "title", "release", "video_release", "imdb", *genres]
            movies = parse_delimited(files.read(release.movies), label, "|", names, encoding="latin-1")
            flags = movies[genres].to_numpy() == "1"
            first = np.where(flags.any(axis=1), flags.argmax(axis=1), -1)
            movies["category"] = [genres[g] if g >= 0 else "" for g in first]
        else:
            movies = parse_delimited(files.read(release.movies), label, "::", ["item", "title", "genres"], "latin-1")
            movies["category"] = movies["genres"].fillna("").str.split("|").str[0]
        return interactions, _items(movies[["item", "title", "category"]], label)

    def _read_atomic(self, inter: Path, item: Path) -> tuple[pa.Table, pa.Table | None]:
        """RecBole atomic files: tab-separated, header fields ``name:type``."""
        if not inter.exists():
            raise FileNotFoundError(f"{inter}: no such file; pass a RecBole .inter file as path=")
        frame = parse_delimited(inter.read_bytes(), str(inter), "\t")
        fields = {column.split(":")[0]: column for column in frame.columns}
        columns = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
        missing = [f for f in columns.values() if f not in fields]
        if missing:
            raise DataFormatError(
                f"{inter}: missing column {missing[0]!r} (header fields found: {', '.join(frame.columns)}); a RecBole "
                "MovieLens .inter file has user_id:token, item_id:token, rating:float and timestamp:float"
            )
        mapping = {canonical: fields[field] for canonical, field in columns.items()}
        interactions = read_table(frame, mapping, integer_ids=True, label=str(inter), first_line=2)
        if not item.exists():
            return interactions, None
        movies = parse_delimited(item.read_bytes(), str(item), "\t")
        fields = {column.split(":")[0]: column for column in movies.columns}
        if "item_id" not in fields:
            raise DataFormatError(f"{item}: missing column 'item_id' (found: {', '.join(movies.columns)})")
        table = pd.DataFrame({"item": movies[fields["item_id"]]})
        title = movies[fields["movie_title"]] if "movie_title" in fields else pd.Series([""] * len(movies))
        if "release_year" in fields:
            year = movies[fields["release_year"]]
            title = title.where(year == "", title + " (" + year + ")")
        table["title"] = title
        genres = movies[fields["class"]] if "class" in fields else pd.Series([""] * len(movies))
        table["category"] = genres.str.split().str[0].fillna("")
        return interactions, _items(table, str(item), first_line=2)


def _items(frame: pd.DataFrame, label: str, first_line: int = 1) -> pa.Table:
    return read_table(frame, required=("item",), integer_ids=True, label=label, first_line=first_line, extra=True)
