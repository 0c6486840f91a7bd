"""Each e-commerce YAML config parses and trains one short epoch through ``attnrec fit``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from attnrec.cli import main

CONFIGS = Path(__file__).parents[2] / "plugins" / "attnrec_ecommerce" / "configs"
TINY = (
    "--data.init_args.num_users=150", "--data.init_args.num_items=150", "--data.init_args.max_len=20",
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
)  # fmt: skip
MODEL = {
    "sasrec.yaml": ("--model.init_args.dim=16",),
    "sasrec_bce.yaml": ("--model.init_args.dim=16",),
    "din.yaml": ("--model.init_args.dim=16", "--data.init_args.eval_negatives=20"),
    "bst.yaml": ("--model.init_args.dim=16", "--model.init_args.num_heads=2",
                 "--data.init_args.eval_negatives=20"),
}  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def test_every_config_is_tested() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(MODEL)


@pytest.mark.parametrize("config", sorted(MODEL))
def test_config_trains_one_epoch(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["fit", f"--config={CONFIGS / config}", *TINY, *MODEL[config], f"--trainer.default_root_dir={tmp_path}"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert re.search(r"best checkpoint: .+\.ckpt", out), out
    assert "loss=BCELoss" in out if config != "sasrec.yaml" else "loss=CrossEntropyLoss" in out
    candidates = "sampled (20 uniform negatives" if config in ("din.yaml", "bst.yaml") else "full (150 items"
    assert candidates in out.replace("\n", " ")
