"""Video data: KuaiRec/MicroLens/generic readers on tiny local files, malformed input, watch-ratio
relevance in the batches, and the cold-item split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from attnrec.data import DataFormatError
from attnrec_video import (
    KuaiRecDataModule, MicroLensDataModule, VideoDataModule, VideoSampleDataModule, WatchCollate, generate_videos,
)  # fmt: skip

KUAIREC_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio"


def _kuairec(tmp_path: Path, rows: list[str], categories: str | None = None) -> Path:
    root = tmp_path / "KuaiRec 2.0" / "data"
    root.mkdir(parents=True)
    (root / "small_matrix.csv").write_text("\n".join([KUAIREC_HEADER, *rows]) + "\n")
    if categories is not None:
        (root / "item_categories.csv").write_text(categories)
    return tmp_path


def _kuairec_rows() -> list[str]:
    rows = []
    for user in range(3):
        for step, video in enumerate(range(5)):
            ratio = 0.5 + 0.25 * video  # video 4 is watched twice over
            rows.append(f"{user},{video},{ratio * 10000:.0f},10000,t,20200705,{1000 + 10 * step + user},{ratio}")
    return rows


def test_kuairec_reads_watch_ratio_tags_and_durations(tmp_path: Path) -> None:
    rows = _kuairec_rows() + ["2,7,500,8000,,,,0.0625"]  # KuaiRec leaves some timestamps empty
    categories = 'video_id,feat\n0,[8]\n1,"[27, 9]"\n2,[9]\n3,[]\n4,[8]\n'
    dm = KuaiRecDataModule(root=str(_kuairec(tmp_path, rows, categories)), split="loo", max_len=5, ratio_cap=1.5)
    catalog = dm.catalog
    assert catalog.num_items == 5 and dm.num_users == 3
    assert "dropped 1 rows without timestamp" in dm.protocol["filtering"]
    tags = catalog.features["tags"]
    video1 = dm.item_map.index(1)
    assert sorted(dm.tag_names[c - 1] for c in tags[video1].tolist() if c) == ["27", "9"]
    assert not bool(catalog.features["has_tags"][dm.item_map.index(3)])  # "[]" means no tag
    assert bool(catalog.features["has_duration"][1:].all())  # from video_duration (ms -> s)
    assert "visual" not in catalog.features or not bool(catalog.features["has_visual"].any())
    batch = next(iter(dm.train_dataloader()))
    targets, weights = batch["target"], batch["target_weight"]
    expected = torch.tensor([min(0.5 + 0.25 * int(dm.item_map.raw[i]), 1.5) if i else 0.0 for i in targets.flatten().tolist()])
    assert torch.allclose(weights.flatten(), expected)


def test_kuairec_rejects_malformed_files(tmp_path: Path) -> None:
    broken = _kuairec(tmp_path / "a", ["0,1,100,1000,t,1,5,0.1", "0,2,100,1000,t,1,6,lots"])
    with pytest.raises(DataFormatError, match=r"small_matrix.csv, line 3, column 'watch_ratio'.*'lots'"):
        _ = KuaiRecDataModule(root=str(broken)).catalog
    root = tmp_path / "b"
    root.mkdir()
    (root / "small_matrix.csv").write_text("user_id,video_id,timestamp\n0,1,5\n")
    with pytest.raises(DataFormatError, match=r"not a KuaiRec matrix file; missing columns \['play_duration'"):
        _ = KuaiRecDataModule(root=str(root)).catalog
    with pytest.raises(FileNotFoundError, match="no big_matrix.csv under"):
        _ = KuaiRecDataModule(root=str(root), matrix="big").catalog


def test_kuairec_without_local_files_or_download_names_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNREC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"small_matrix.csv is not in .*kuairec and download=False"):
        _ = KuaiRecDataModule(download=False).catalog


def test_microlens_reads_pairs_titles_and_tags(tmp_path: Path) -> None:
    pairs = ["user,item,timestamp"] + [f"{u},{i},{100 * u + i}" for u in range(1, 4) for i in range(1, 6)]
    (tmp_path / "MicroLens-100k_pairs.csv").write_text("\n".join(pairs) + "\n")
    (tmp_path / "MicroLens-100k_title_en.csv").write_text('1,Funny cat jumps\n2,"Cooking, fast"\n3,cat video\n')
    (tmp_path / "tags_to_summary.csv").write_text("1,pets\n2,food;cooking\n")
    dm = MicroLensDataModule(root=str(tmp_path), max_len=5)
    catalog = dm.catalog
    assert catalog.titles is not None and catalog.titles[dm.item_map.index(2)] == "Cooking, fast"
    has_title = catalog.features["has_title"]
    assert has_title[1:].tolist() == [True, True, True, False, False]
    cat = dm.title_words.index("cat") + 1
    assert (catalog.features["title_tokens"][dm.item_map.index(1)] == cat).any()
    assert catalog.features["has_tags"][1:].tolist() == [True, True, False, False, False]
    weights = next(iter(dm.train_dataloader()))["target_weight"]
    assert set(weights.unique().tolist()) <= {0.0, 1.0}  # no watch time: every watch counts 1


def test_microlens_missing_column_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "MicroLens-50k_pairs.csv").write_text("user,video,when\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"no video id column .*columns found: user, video, when"):
        _ = MicroLensDataModule(root=str(tmp_path), variant="50k").catalog


def test_generic_log_with_vectors_and_embeddings(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {"uid": [1, 1, 1, 2, 2, 2], "vid": [10, 11, 12, 10, 12, 13], "timestamp": [1, 2, 3, 1, 2, 3],
         "watch_time": [5.0, 1.0, 30.0, 10.0, 0.0, 2.0], "duration": [10.0, 10.0, 15.0, 10.0, 15.0, 4.0]}
    )  # fmt: skip
    log.to_csv(tmp_path / "log.csv", index=False)
    items = pd.DataFrame(
        {"item": [10, 11, 12, 13], "title": ["a b", None, "c", "d"], "tags": [["x", "y"], None, ["y"], []],
         "visual": [[0.0, 1.0], [1.0, 0.0], None, [float("nan"), 1.0]]}
    )  # fmt: skip
    items.to_parquet(tmp_path / "items.parquet")
    np.savez(tmp_path / "emb.npz", item=np.array([10, 13]), audio=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    dm = VideoDataModule(
        path=str(tmp_path / "log.csv"), items_path=str(tmp_path / "items.parquet"),
        embeddings_path=str(tmp_path / "emb.npz"), columns={"user": "uid", "item": "vid"}, max_len=4,
    )  # fmt: skip
    f = dm.catalog.features
    assert f["visual"].shape == (5, 2) and f["has_visual"][1:].tolist() == [True, True, False, False]  # NaN = missing
    assert f["audio"].shape == (5, 3) and f["has_audio"][1:].tolist() == [True, False, False, True]
    assert f["has_tags"][1:].tolist() == [True, False, True, False]
    assert f["has_title"][1:].tolist() == [True, False, True, True]
    # watch ratio = watch_time / duration: user 1 watched video 12 twice over, capped at 2
    users, items_ = torch.tensor([1, 1]), torch.tensor([[dm.item_map.index(12), dm.item_map.index(11)]] * 2)
    assert dm.relevance(users, items_)[0].tolist() == pytest.approx([2.0, 0.1])
    # min_watch_ratio keeps only real views (here drops the 0.1 and 0.0 watches)
    views = VideoDataModule(path=str(tmp_path / "log.csv"), columns={"user": "uid", "item": "vid"}, min_watch_ratio=0.2)
    assert views.protocol["filtering"] == "watch ratio >= 0.2" and views.num_interactions == 4


@pytest.mark.parametrize(
    ("log", "items", "message"),
    [
        ("user,item,timestamp,watch_time\n1,2,3,4\n", None, "has 'watch_time' but no 'duration' column"),
        ("user,item,timestamp,watch_time,duration\n1,2,3,4,0\n", None, r"line 2, column 'duration': a video of length 0"),
        ("user,item,timestamp,watch_ratio\n1,2,3,-1\n", None, r"line 2, column 'watch_ratio': '-1' is negative"),
        ("user,item,timestamp,watch_ratio\n1,2,3,0.5\n", "item,visual\n2,[0.1 x]\n", r"items.csv: column 'visual' of video '2' holds non-numbers"),
        ("user,item,timestamp,watch_ratio\n1,2,3,0.5\n1,5,4,1\n", "item,visual\n2,[0.1 0.2]\n5,[1 2 3]\n", "vector of length 3, the others"),
        ("user,item,timestamp\n1,,3\n", None, r"row 2, column 'item': empty id"),
    ],
)
def test_generic_reader_rejects_malformed_input(tmp_path: Path, log: str, items: str | None, message: str) -> None:
    (tmp_path / "log.csv").write_text(log)
    items_path = None
    if items is not None:
        (tmp_path / "items.csv").write_text(items)
        items_path = str(tmp_path / "items.csv")
    with pytest.raises(DataFormatError, match=message):
        _ = VideoDataModule(path=str(tmp_path / "log.csv"), items_path=items_path).catalog


def test_cold_split_holds_videos_out_of_training_and_validation() -> None:
    dm = VideoSampleDataModule(num_users=120, num_items=100, test_items="cold", cold_items=0.2)
    cold = dm.cold
    assert int(cold.sum()) == 20
    assert float(dm.catalog.popularity[cold].sum()) == 0.0  # never trained on
    assert not any(bool(cold[torch.as_tensor(s)].any()) for s in dm.split_data.train + dm.split_data.val)
    test = next(iter(dm.test_dataloader()))
    targets = test["targets"]
    assert bool(cold[targets[targets != 0]].all())  # test asks only for cold videos
    assert not bool(cold[test["seen"]].any())  # histories hold no cold video
    assert bool((test["target_gain"][targets != 0] > 0).all())
    val = next(iter(dm.val_dataloader()))["targets"]
    assert not bool(cold[val[val != 0]].any())  # model selection never sees a cold video
    assert "the 20 cold videos (20%)" in dm.protocol["items"]
    warm = VideoSampleDataModule(num_users=120, num_items=100, test_items="warm", cold_items=0.2)
    warm_targets = next(iter(warm.test_dataloader()))["targets"]
    assert not bool(cold[warm_targets[warm_targets != 0]].any())


def test_bad_options_name_the_fix() -> None:
    with pytest.raises(ValueError, match="test_items='cold' needs cold_items > 0"):
        VideoSampleDataModule(cold_items=0.0, test_items="cold")
    with pytest.raises(ValueError, match="choose 'all', 'warm' or 'cold'"):
        VideoSampleDataModule(test_items="hot")  # type: ignore[arg-type]


def test_cold_hold_out_feeds_the_catalog_only_the_warm_split() -> None:
    dm = VideoSampleDataModule(num_users=120, num_items=100, cold_items=0.2)
    cold, s, catalog = dm.cold, dm.split_data, dm.catalog
    train = np.concatenate(s.train)
    assert catalog.popularity.tolist() == np.bincount(train, minlength=dm.num_items + 1).tolist()
    assert catalog.train_edges[1].tolist() == train.tolist() and not bool(cold[catalog.train_edges[1]].any())
    # every watch lands exactly once: in a part of the warm split or among the user's cold targets
    log, _ = generate_videos(**dm.generator_args)
    watched = {(dm.user_map.index(u), dm.item_map.index(i)) for u, i in zip(log["user"], log["item"])}
    parts = (s.train, s.val, s.test, dm.cold_targets)
    placed = [(u, int(i)) for part in parts for u in range(1, dm.num_users + 1) for i in part[u]]
    assert len(placed) == len(set(placed)) and set(placed) == watched
    assert all(bool(cold[targets].all()) for targets in dm.cold_targets if len(targets))


def test_eval_mask_seen_reaches_the_cold_test_lists() -> None:
    dm = VideoSampleDataModule(num_users=120, num_items=100, cold_items=0.2, test_items="cold", eval_mask_seen=False)
    batch = next(iter(dm.test_dataloader()))
    assert "seen" not in batch and "target_gain" in batch
    assert bool(dm.cold[batch["targets"][batch["targets"] != 0]].all())
    assert "NOT masked" in dm.protocol["candidates"]


def test_collate_fn_and_user_batch_carry_watch_relevance() -> None:
    dm = VideoSampleDataModule(num_users=60, num_items=80, max_len=6)
    collate = dm.collate_fn("val")
    assert isinstance(collate, WatchCollate)
    assert "target_gain" in collate([dm.eval_lists("val")[0]])
    batch = dm.user_batch([5, 1])
    assert batch["history"].shape == (2, 6) and batch["user"].tolist() == [dm.user_map.index(5), dm.user_map.index(1)]
    assert batch["seen"][0][batch["seen"][0] != 0].tolist() == dm.user_history(5).tolist()
    with pytest.raises(KeyError, match=r"user 9999 is not in video-sample\(seed=0\) \(60 users\)"):
        dm.user_batch([9999])


@pytest.mark.parametrize(
    "build",
    [
        lambda tmp: VideoSampleDataModule(num_users=50, max_len=7, eval_mask_seen=False),
        lambda tmp: VideoDataModule(path=str(tmp / "log.csv"), max_len=7, eval_mask_seen=False),
        lambda tmp: KuaiRecDataModule(root=str(tmp), max_len=7, eval_mask_seen=False),
        lambda tmp: MicroLensDataModule(root=str(tmp), max_len=7, eval_mask_seen=False),
    ],
    ids=["sample", "files", "kuairec", "microlens"],
)
def test_video_modules_rebuild_from_their_hyperparameters(tmp_path: Path, build: Any) -> None:
    dm = build(tmp_path)
    assert dm.hparams["eval_mask_seen"] is False
    again = type(dm)(**dm.hparams)  # what a checkpoint does
    assert (again.max_len, again.eval_mask_seen) == (7, False)
    assert "path" not in dm.hparams or isinstance(dm, VideoDataModule)
