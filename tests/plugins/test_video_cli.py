"""The video configs train and test through the ``attnrec`` CLI (one short epoch each)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attnrec.cli import main
from attnrec.encoders import IdItemEncoder
from attnrec_video import MultimodalItemEncoder, VideoRecommender

CONFIGS = Path(__file__).resolve().parents[2] / "plugins" / "attnrec_video" / "configs"


@pytest.mark.parametrize("config", ["multimodal.yaml", "id_only.yaml"])
def test_config_fits_one_quick_epoch(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["attnrec"])  # pytest's own arguments are not the CLI's
    status = main(
        [
            "fit", "--config", str(CONFIGS / config), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false", "--data.init_args.num_users=150", "--data.init_args.num_items=100",
        ]
    )  # fmt: skip
    assert status == 0
    out = " ".join(capsys.readouterr().out.split())  # the table and protocol wrap at the console width
    assert "WatchNDCG@10" in out and "HR@10" in out  # the test table, watch-time NDCG next to HR/NDCG
    assert "the 10 cold videos (10%)" in out  # printed with its protocol: test ranks the cold videos
    (checkpoint,) = tmp_path.rglob("best-*.ckpt")
    model = VideoRecommender.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    expected = MultimodalItemEncoder if config == "multimodal.yaml" else IdItemEncoder
    assert type(model.item_encoder) is expected and model.catalog.num_items == 100
    assert bool(model.catalog.features["has_visual"].any())  # content features travel in the checkpoint
