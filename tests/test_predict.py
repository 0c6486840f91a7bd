"""Prediction files: ``attnrec predict`` writes every user's top-k with raw ids (Parquet or CSV),
from the checkpoint alone, and two DDP processes write the same one file as one process."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from attnrec import Recommender
from attnrec.cli import main
from attnrec.data import InteractionDataModule, generate
from attnrec.data.serving import ServingData
from attnrec.predict import file_format, merge_shards, prediction_table, shard_path, write_table


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for one epoch on synthetic data whose ids are strings unlike their
    internal ids (zero-padded users, prefixed items) and whose items have titles."""
    tmp = tmp_path_factory.mktemp("predict")
    interactions, items = generate(num_users=120, num_items=130, seed=3)
    rows = interactions.to_pandas()
    rows["user"] = rows["user"].map(lambda u: f"{int(u):04d}")
    rows["item"] = rows["item"].map(lambda i: f"sku-{i}")
    rows.to_csv(tmp / "interactions.csv", index=False)
    table = items.to_pandas()[["item", "title"]]
    table["item"] = table["item"].map(lambda i: f"sku-{i}")
    table.to_csv(tmp / "items.csv", index=False)
    data = InteractionDataModule(
        path=str(tmp / "interactions.csv"), items_path=str(tmp / "items.csv"), max_len=20, batch_size=64
    )
    model = Recommender(data.catalog, dim=16, max_len=20)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=data)
    path = tmp / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _predict(checkpoint: Path, out: Path, *args: str) -> None:
    main(["predict", f"--ckpt_path={checkpoint}", f"--predictions.path={out}", "--trainer.logger=false",
          f"--trainer.default_root_dir={out.parent}", "--trainer.enable_progress_bar=false", *args])  # fmt: skip


def test_parquet_file_holds_every_users_top_k_with_raw_ids(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.parquet"
    _predict(checkpoint, out, "--predictions.k=5")
    rows = pq.read_table(out).to_pylist()
    assert list(rows[0]) == ["user", "rank", "item", "score", "title"]
    model = Recommender.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    state = torch.load(checkpoint, weights_only=True)["attnrec_serving"]
    serving = ServingData(state, model.catalog)
    users = state["user_ids"][1:]
    assert {row["user"] for row in rows} == set(users)  # every user, by raw id
    assert len(rows) == 5 * len(users)
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user"], []).append(row)
    for user in (users[0], users[57], users[-1]):
        got = by_user[user]
        assert [row["rank"] for row in got] == [1, 2, 3, 4, 5]
        items, scores = model.recommend(serving.user_batch([user]), k=5)
        assert [row["item"] for row in got] == [model.catalog.raw_ids[i] for i in items[0].tolist()]
        assert np.allclose([row["score"] for row in got], scores[0].numpy(), atol=1e-5)
        assert [row["title"] for row in got] == [model.catalog.title(i) for i in items[0].tolist()]
        seen = {model.catalog.raw_ids[i] for i in serving.history(serving.user_index(user)).tolist()}
        assert seen and not seen & {row["item"] for row in got}  # seen items are excluded
    assert all(row["item"].startswith("sku-") and len(row["user"]) == 4 for row in rows)


def test_csv_by_extension_and_the_default_path_in_the_run_folder(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.csv"
    _predict(checkpoint, out, "--predictions.k=3")
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    parquet = pq.read_table(_default_file(checkpoint, tmp_path)).to_pylist()
    assert [(r["user"], r["item"]) for r in rows] == [(r["user"], r["item"]) for r in parquet if r["rank"] <= 3]
    assert rows[0]["user"] == "0001"  # written as the raw id, zero padding kept


def _default_file(checkpoint: Path, root: Path) -> Path:
    main(["predict", f"--ckpt_path={checkpoint}", f"--trainer.default_root_dir={root}",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    (path,) = root.glob("lightning_logs/version_*/predictions.parquet")
    return path


def test_an_unknown_extension_is_refused_naming_the_ones_that_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"top\.json: prediction files are \.parquet .* or \.csv"):
        file_format(tmp_path / "top.json")


def test_shards_merge_into_the_one_process_order(tmp_path: Path) -> None:
    users, items = np.array([1, 2, 3, 4]), np.array([[5, 6], [7, 0], [5, 8], [6, 7]])
    scores = np.ones((4, 2), dtype=np.float32)
    raw_users, raw_items = ["", "a", "b", "c", "d"], [""] + [f"i{i}" for i in range(1, 9)]
    whole = prediction_table(users, items, scores, raw_users, raw_items)
    target = tmp_path / "top.csv"
    for rank, picked in enumerate(([1, 3], [0, 2])):  # interleaved, as DistributedSampler splits
        part = prediction_table(users[picked], items[picked], scores[picked], raw_users, raw_items)
        kept = np.repeat(users[picked], 2)[items[picked].reshape(-1) != 0]
        write_table(part.append_column("_user_index", [kept]), shard_path(target, rank))
    merge_shards([shard_path(target, rank) for rank in range(2)], target)
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["user"], r["item"]) for r in rows] == list(zip(whole["user"].to_pylist(), whole["item"].to_pylist()))
    assert ("b", "") not in [(r["user"], r["item"]) for r in rows]  # a list end (item 0) is no row
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.csv"]  # shards removed


@pytest.mark.slow
def test_two_ddp_processes_write_the_one_process_file(checkpoint: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    _predict(checkpoint, one)
    result = subprocess.run(
        [sys.executable, "-m", "attnrec.cli", "predict", f"--ckpt_path={checkpoint}", f"--predictions.path={two}",
         "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
         "--trainer.devices=2", "--trainer.strategy=ddp"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = pq.read_table(one).to_pylist(), pq.read_table(two).to_pylist()
    assert [(r["user"], r["rank"], r["item"]) for r in a] == [(r["user"], r["rank"], r["item"]) for r in b]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    assert not [p.name for p in tmp_path.iterdir() if p.suffix == ".parquet" and p.name not in (one.name, two.name)]
