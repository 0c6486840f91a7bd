"""MIND-format news data: parsing with located errors, download-and-cache, and the data module.

Layout read from a folder (``path=``) or built in the cache by ``version=``::

    <root>/train/{news.tsv, behaviors.tsv}
    <root>/dev/{news.tsv, behaviors.tsv}
    <root>/test/{news.tsv, behaviors.tsv}      optional; used as the test split when labelled

``news.tsv``: news id, category, subcategory, title, abstract, url, title entities, abstract
entities (tab-separated). ``behaviors.tsv``: impression id, user, time
(``11/15/2019 8:55:22 AM``), history (``N1 N2 ...``, oldest first), impressions
(``N123-1 N456-0 ...``; 1 = clicked). MIND-large's test impressions carry no labels, so for it
(and MIND-small/demo, which have no test split) the dev split serves as the test split, as in
the published results.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from attnrec.data import DataFormatError, IdMap, tsv_rows
from attnrec.data.download import cache_root, fetch
from attnrec.interfaces import Batch, ItemCatalog, RecDataModule

from .sample import TIME_FORMAT, generate_mind
from .text import hf_tokens, vocabulary_tokens

Version = Literal["demo", "small", "large"]
SPLITS = ("train", "dev", "test")
NEWS_FIELDS = ("news id", "category", "subcategory", "title", "abstract", "url", "title entities", "abstract entities")
BEHAVIOR_FIELDS = ("impression id", "user", "time", "history", "impressions")
_DEMO = "https://recodatasets.z20.web.core.windows.net/newsrec/MINDdemo_{split}.zip"
_RELEASE = "https://mind201910small.blob.core.windows.net/release/MIND{version}_{split}.zip"
URLS: dict[str, dict[str, str]] = {
    "demo": {s: _DEMO.format(split=s) for s in ("train", "dev")},
    "small": {s: _RELEASE.format(version="small", split=s) for s in ("train", "dev")},
    "large": {s: _RELEASE.format(version="large", split=s) for s in ("train", "dev", "test")},
}
"""Public download addresses (Microsoft's MIND release and Microsoft Recommenders' demo subset).
Microsoft publishes no digests for them, so the first download's SHA-256 is recorded and
enforced from then on (trust on first use, with a warning)."""


@dataclass
class News:
    """Parsed ``news.tsv`` rows (all splits together; a news id repeated across splits keeps its first row)."""

    ids: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)
    subcategory: list[str] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    abstract: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


@dataclass
class Behaviors:
    """Parsed ``behaviors.tsv`` rows of one split (raw ids; ``labels`` is None when unlabelled)."""

    users: list[str]
    times: list[float]
    histories: list[list[str]]
    candidates: list[list[str]]
    labels: list[list[int]] | None


def parse_news(lines: Iterable[str], source: str, news: News | None = None) -> News:
    """Add ``news.tsv`` rows to ``news``; a malformed row raises naming ``source``, line and field."""
    news = news if news is not None else News()
    count = 0
    fix = "separate fields by tabs and remove tabs inside titles/abstracts (empty fields are allowed)."
    for number, fields in tsv_rows(lines, source, NEWS_FIELDS, fix):
        news_id = fields[0].strip()
        if not news_id:
            raise DataFormatError(f"{source}, line {number}, field 'news id': empty; every row needs an id such as N123")
        count += 1
        if news_id in news.seen:
            continue
        news.seen.add(news_id)
        news.ids.append(news_id)
        news.category.append(fields[1].strip())
        news.subcategory.append(fields[2].strip())
        news.title.append(fields[3].strip())
        news.abstract.append(fields[4].strip())
    if count == 0:
        raise DataFormatError(f"{source}: no news rows; expected one tab-separated row per article ({', '.join(NEWS_FIELDS)})")
    return news


def _parse_time(text: str, source: str, number: int) -> float:
    try:
        return dt.datetime.strptime(text.strip(), TIME_FORMAT).timestamp()
    except ValueError:
        raise DataFormatError(
            f"{source}, line {number}, field 'time': {text!r} is not a time like '11/15/2019 8:55:22 AM' "
            "(month/day/year hour:minute:second AM|PM)"
        ) from None


def parse_behaviors(lines: Iterable[str], source: str, known: set[str]) -> Behaviors:
    """``behaviors.tsv`` rows; every news id must be in ``known`` (the parsed ``news.tsv``)."""
    out = Behaviors([], [], [], [], [])
    labelled: bool | None = None
    fix = "separate fields by tabs; leave the history empty (but keep its tab) for a user without clicks."
    for number, fields in tsv_rows(lines, source, BEHAVIOR_FIELDS, fix):
        user = fields[1].strip()
        if not user:
            raise DataFormatError(f"{source}, line {number}, field 'user': empty; every impression needs a user id")
        history = fields[3].split()
        for news_id in history:
            if news_id not in known:
                raise DataFormatError(
                    f"{source}, line {number}, field 'history': news id {news_id!r} is not in news.tsv; add its row "
                    "to the split's news.tsv or remove it from the history"
                )
        tokens = fields[4].split()
        if not tokens:
            raise DataFormatError(f"{source}, line {number}, field 'impressions': empty; expected 'N123-1 N456-0 ...'")
        candidates, labels = [], []
        for token in tokens:
            news_id, dash, label = token.rpartition("-") if "-" in token else (token, "", "")
            has_label = bool(dash)
            if labelled is None:
                labelled = has_label
            if has_label != labelled or (has_label and label not in ("0", "1")):
                raise DataFormatError(
                    f"{source}, line {number}, field 'impressions': token {token!r} is malformed; write news id, "
                    "'-' and 1 (clicked) or 0 (not clicked), e.g. N123-1, in every token (or no labels at all, as in "
                    "MIND-large's test split)"
                )
            if news_id not in known:
                raise DataFormatError(
                    f"{source}, line {number}, field 'impressions': news id {news_id!r} is not in news.tsv; add its "
                    "row to the split's news.tsv"
                )
            candidates.append(news_id)
            labels.append(int(label) if has_label else 0)
        out.users.append(user)
        out.times.append(_parse_time(fields[2], source, number))
        out.histories.append(history)
        out.candidates.append(candidates)
        out.labels.append(labels)  # type: ignore[union-attr]
    if not out.users:
        raise DataFormatError(f"{source}: no impressions; expected one tab-separated row per impression ({', '.join(BEHAVIOR_FIELDS)})")
    if not labelled:
        out.labels = None
    return out


def download_mind(version: Version, root: str | os.PathLike | None = None) -> Path:
    """MIND ``version`` extracted under ``root`` (default: the attnrec cache), downloading and
    verifying each split's zip once; returns the folder holding ``train/``, ``dev/`` (``test/``)."""
    if version not in URLS:
        raise ValueError(f"unknown MIND version {version!r}; choose one of {', '.join(URLS)}")
    folder = Path(root) if root is not None else cache_root() / "mind" / version
    for split, url in URLS[version].items():
        target = folder / split
        if (target / "behaviors.tsv").exists() and (target / "news.tsv").exists():
            continue
        archive = fetch(url, folder / "zips")
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{split}."))
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
            found = next(staging.rglob("behaviors.tsv"), None)
            if found is None:
                raise DataFormatError(f"{archive}: holds no behaviors.tsv; delete it to download it again")
            if target.exists():
                shutil.rmtree(target)
            os.replace(found.parent, target)  # atomic: a half-extracted split never looks complete
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@dataclass
class Impressions:
    """One split's impressions as internal ids."""

    users: np.ndarray  # [M]
    histories: list[np.ndarray]
    candidates: list[np.ndarray]
    labels: list[np.ndarray]


class TrainClicks(Dataset):
    """One example per click: the impression's history, the clicked news and ``npratio``
    non-clicked news of the same impression (drawn anew each time, MIND's ``newsample``:
    with repetition only when the impression shows fewer non-clicks)."""

    def __init__(self, impressions: Impressions, npratio: int, num_items: int) -> None:
        self.impressions, self.npratio, self.num_items = impressions, npratio, num_items
        index = [(i, int(c)) for i, (cand, lab) in enumerate(zip(impressions.candidates, impressions.labels))
                 for c in cand[lab == 1]]  # fmt: skip
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        imp, clicked = (int(x) for x in self.index[i])
        pool = self.impressions.candidates[imp][self.impressions.labels[imp] == 0]
        if len(pool) == 0:  # an all-click impression: fall back to random news
            negatives = torch.randint(1, self.num_items + 1, (self.npratio,))
        elif len(pool) >= self.npratio:
            negatives = torch.as_tensor(pool)[torch.randperm(len(pool))[: self.npratio]]
        else:
            negatives = torch.as_tensor(pool)[torch.randint(len(pool), (self.npratio,))]
        return {"user": int(self.impressions.users[imp]), "history": self.impressions.histories[imp],
                "target": np.asarray([clicked]), "negatives": negatives.view(1, -1)}  # fmt: skip


class ImpressionLists(Dataset):
    """Evaluation: one list per impression with at least one click (MIND's scorer needs one);
    ``require_click=False`` keeps every row (prediction, where nothing is labelled)."""

    def __init__(
        self, impressions: Impressions, protocol: Literal["impressions", "full"], require_click: bool = True
    ) -> None:
        self.impressions, self.protocol = impressions, protocol
        self.keep = [i for i, lab in enumerate(impressions.labels) if lab.any() or not require_click]

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict[str, Any]:
        imp = self.keep[i]
        history = self.impressions.histories[imp]
        example: dict[str, Any] = {"user": int(self.impressions.users[imp]), "history": history}
        candidates, labels = self.impressions.candidates[imp], self.impressions.labels[imp]
        if self.protocol == "impressions":
            example["candidates"], example["labels"] = candidates, labels
        else:
            example["targets"], example["seen"] = candidates[labels == 1], history
        return example


class NewsCollate:
    """Histories left-padded to ``max_len`` (most recent kept), lists right-padded with 0."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        batch = {"user": torch.tensor([e["user"] for e in examples], dtype=torch.long)}
        history = torch.zeros(len(examples), self.max_len, dtype=torch.long)
        for row, e in enumerate(examples):
            recent = np.asarray(e["history"][-self.max_len :], dtype=np.int64)
            if len(recent):
                history[row, self.max_len - len(recent) :] = torch.as_tensor(recent)
        batch["history"] = history
        for key in ("target", "candidates", "labels", "targets", "seen"):
            if key in examples[0]:
                width = max(1, max(len(e[key]) for e in examples))
                out = torch.zeros(len(examples), width, dtype=torch.long)
                for row, e in enumerate(examples):
                    out[row, : len(e[key])] = torch.as_tensor(np.asarray(e[key], dtype=np.int64))
                batch[key] = out
        if "negatives" in examples[0]:
            batch["negatives"] = torch.stack([e["negatives"] for e in examples])  # [B, 1, K]
        return batch


class MINDDataModule(RecDataModule):
    """MIND-format news: train on ``train`` clicks (each with ``npratio`` non-clicked news of its
    impression, for a softmax over 1 + npratio), validate on ``dev``, test on a labelled ``test``
    split or else on ``dev``.

    Sources, first that applies: ``path`` (a folder with ``train/`` and ``dev/``), ``version``
    (MIND ``demo``/``small``/``large``, downloaded once into ``$ATTNREC_DATA``), else the bundled
    generated sample (see :mod:`attnrec_news.sample`; ``sample_*`` size it). Titles become the
    catalog feature ``title_tokens [N+1, title_length]`` through a vocabulary of the titles
    (``tokenizer=None``) or a Hugging Face tokenizer (a hub id or folder; ``"offline-minilm"``:
    the bundled all-MiniLM-L6-v2 one); ``category``/``subcategory`` become codes (0 = padding,
    ``code_names`` maps them back).
    ``eval_protocol="impressions"`` ranks each impression's shown news (MIND's protocol);
    ``"full"`` ranks the whole catalogue for the impression's clicks, history masked.
    """

    def __init__(
        self,
        path: str | None = None,
        version: Version | None = None,
        max_len: int = 50,
        title_length: int = 20,
        npratio: int = 4,
        tokenizer: str | None = None,
        min_word_count: int = 1,
        eval_protocol: Literal["impressions", "full"] = "impressions",
        batch_size: int = 64,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        sample_users: int = 500,
        sample_news: int = 900,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if eval_protocol not in ("impressions", "full"):
            raise ValueError(f"eval_protocol must be 'impressions' or 'full', got {eval_protocol!r}")
        if npratio < 1:
            raise ValueError(f"npratio must be at least 1 (non-clicked news per click), got {npratio}")
        if max_len < 1 or title_length < 1:
            raise ValueError(f"max_len and title_length must be at least 1, got {max_len} and {title_length}")
        self.path, self.version = path, version
        self.max_len, self.title_length, self.npratio = max_len, title_length, npratio
        self.tokenizer, self.min_word_count = tokenizer, min_word_count
        self.eval_protocol = eval_protocol
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.sample_args = dict(num_users=sample_users, num_news=sample_news, seed=sample_seed)
        self._prepared = False

    # ------------------------------------------------------------------ reading
    def _sources(self) -> dict[str, dict[str, tuple[Iterable[str], str]]]:
        """Lines and a display name for each available split's two files."""
        if self.path is None and self.version is None:
            generated = generate_mind(**self.sample_args)
            return {split: {name: (rows, f"bundled sample {split}/{name}") for name, rows in files.items()}
                    for split, files in generated.items()}  # fmt: skip
        root = Path(self.path) if self.path is not None else download_mind(self.version)  # type: ignore[arg-type]
        sources: dict[str, dict[str, tuple[Iterable[str], str]]] = {}
        for split in SPLITS:
            folder = root / split
            files = {name: folder / name for name in ("news.tsv", "behaviors.tsv")}
            if not all(f.exists() for f in files.values()):
                if split in ("train", "dev"):
                    missing = [str(f) for f in files.values() if not f.exists()]
                    raise FileNotFoundError(
                        f"MIND data at {root}: missing {', '.join(missing)}. Expected {root}/train/ and {root}/dev/ "
                        "(optionally test/), each with news.tsv and behaviors.tsv, as in the extracted MIND zips"
                    )
                continue
            sources[split] = {name: (_lines(f), str(f)) for name, f in files.items()}
        return sources

    def _read_impressions(self) -> None:
        if self._prepared:
            return
        sources = self._sources()
        news = News()
        for files in sources.values():
            rows, label = files["news.tsv"]
            parse_news(rows, label, news)
        behaviors = {split: parse_behaviors(files["behaviors.tsv"][0], files["behaviors.tsv"][1], news.seen)
                     for split, files in sources.items()}  # fmt: skip
        if behaviors["train"].labels is None or behaviors["dev"].labels is None:
            split = "train" if behaviors["train"].labels is None else "dev"
            raise DataFormatError(f"{sources[split]['behaviors.tsv'][1]}: the {split} impressions carry no click labels (N123-1)")
        self.item_map = IdMap(np.asarray(news.ids), "news")
        self.user_map = IdMap(np.asarray(sorted({u for b in behaviors.values() for u in b.users})), "user")
        order = self.item_map.encode(np.asarray(news.ids))  # row of each parsed news
        self.splits = {split: self._encode(b) for split, b in behaviors.items() if b.labels is not None}
        self.test_split = "test" if "test" in self.splits else "dev"
        self._catalog = self._build_catalog(news, order)
        self._prepared = True

    def _encode(self, b: Behaviors) -> Impressions:
        enc = self.item_map.encode
        return Impressions(
            users=self.user_map.encode(np.asarray(b.users)),
            histories=[enc(np.asarray(h)) if h else np.zeros(0, np.int64) for h in b.histories],
            candidates=[enc(np.asarray(c)) for c in b.candidates],
            labels=[np.asarray(lab, dtype=np.int64) for lab in (b.labels or [])],
        )

    def _build_catalog(self, news: News, order: np.ndarray) -> ItemCatalog:
        rows = len(self.item_map) + 1
        titles = [""] * rows
        for row, title in zip(order, news.title):
            titles[row] = title
        if self.tokenizer is None:
            tokens, self.vocabulary = vocabulary_tokens(titles, self.title_length, self.min_word_count)
        else:
            tokens, self.vocabulary = hf_tokens(titles, self.title_length, self.tokenizer), []
        features = {"title_tokens": tokens}
        self.code_names: dict[str, list[str]] = {}
        for name, values in (("category", news.category), ("subcategory", news.subcategory)):
            names, codes = np.unique(np.asarray(values), return_inverse=True)
            self.code_names[name] = ["", *names.tolist()]  # code -> name; 0 is padding
            codes = codes + 1
            feature = torch.zeros(rows, dtype=torch.long)
            feature[torch.as_tensor(order)] = torch.as_tensor(codes, dtype=torch.long)
            features[name] = feature
        train = self.splits["train"]
        clicked = [c[lab == 1] for c, lab in zip(train.candidates, train.labels)]
        items = np.concatenate(clicked) if clicked else np.zeros(0, np.int64)
        users = np.repeat(train.users, [len(c) for c in clicked])
        popularity = np.bincount(items, minlength=rows)
        return ItemCatalog(
            num_items=rows - 1,
            popularity=torch.as_tensor(popularity, dtype=torch.float32),
            raw_ids=list(self.item_map.raw),
            titles=titles,
            features=features,
            num_users=len(self.user_map),
            train_edges=torch.as_tensor(np.stack([users, items]), dtype=torch.long),
        )

    # -------------------------------------------------------------------- facts
    @property
    def catalog(self) -> ItemCatalog:
        self._read_impressions()
        return self._catalog

    @property
    def name(self) -> str:
        if self.path is not None:
            return f"MIND-format {os.path.basename(os.path.normpath(self.path))}"
        if self.version is not None:
            return f"MIND-{self.version}"
        return f"bundled news sample (seed={self.sample_args['seed']})"

    @property
    def protocol(self) -> dict[str, str]:
        self._read_impressions()
        if self.eval_protocol == "impressions":
            candidates = "impressions (each impression's shown news; MIND scorer)"
        else:
            candidates = f"full ({self.num_items} news, history masked)"
        return {
            "data": self.name,
            "split": f"train -> dev (val) / {self.test_split} (test)",
            "candidates": candidates,
            "max_len": str(self.max_len),
            "title_length": str(self.title_length),
            "npratio": str(self.npratio),
            "filtering": "impressions without clicks skipped in evaluation",
        }

    def _internal_user(self, user: Any) -> int:
        self._read_impressions()
        return self.user_map.index(user, where=self.name)

    def user_history(self, user: Any) -> Tensor:
        """The history of the user's most recent impression (test, else dev, else train), oldest first."""
        return torch.as_tensor(self._latest_histories()[self._internal_user(user)], dtype=torch.long)

    def user_batch(self, users: Sequence[Any]) -> Batch:
        """Full-catalogue requests after each user's most recent history, which is also what
        ``seen`` excludes (MIND logs clicks only through histories)."""
        if len(users) == 0:
            raise ValueError(f"{self.name}: user_batch needs at least one user id")
        examples = []
        for user in users:
            index = self._internal_user(user)
            history = self._latest_histories()[index]
            examples.append({"user": index, "history": history, "seen": history})
        return NewsCollate(self.max_len)(examples)

    def _latest_histories(self) -> list[np.ndarray]:
        if not hasattr(self, "_latest"):
            latest = [np.zeros(0, np.int64)] * (self.num_users + 1)
            for split in ("train", "dev", "test"):  # later splits overwrite earlier ones
                imps = self.splits.get(split)
                if imps is not None:
                    for user, history in zip(imps.users.tolist(), imps.histories):
                        latest[user] = history
            self._latest = latest
        return self._latest

    # ------------------------------------------------------------------ loaders
    def setup(self, stage: str | None = None) -> None:
        self._read_impressions()

    def train_dataloader(self) -> DataLoader:
        self._read_impressions()
        clicks = TrainClicks(self.splits["train"], self.npratio, self.num_items)
        if len(clicks) == 0:
            raise DataFormatError(f"{self.name}: the train impressions hold no clicks; nothing to train on")
        return DataLoader(clicks, batch_size=self.batch_size, shuffle=True, collate_fn=NewsCollate(self.max_len),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)  # fmt: skip

    def _impression_loader(self, split: str) -> DataLoader:
        self._read_impressions()
        dataset = ImpressionLists(self.splits[split], self.eval_protocol)
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)  # every impression counted once
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler,
                          collate_fn=NewsCollate(self.max_len), num_workers=self.num_workers)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self._impression_loader("dev")

    def test_dataloader(self) -> DataLoader:
        return self._impression_loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        """Every user with their most recent history, for full-catalogue recommendations."""
        self._read_impressions()
        users = np.arange(1, self.num_users + 1)
        histories = self._latest_histories()[1:]
        lists = Impressions(users, histories, [np.zeros(0, np.int64)] * len(users), [np.zeros(0, np.int64)] * len(users))
        dataset = ImpressionLists(lists, "full", require_click=False)
        return DataLoader(dataset, batch_size=self.eval_batch_size, collate_fn=NewsCollate(self.max_len),
                          num_workers=self.num_workers)  # fmt: skip


def _lines(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8") as handle:
        yield from handle
