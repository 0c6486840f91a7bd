"""The graph plugin's YAML configs train through ``attnrec fit`` (one quick epoch on tiny
data, in-process) and their checkpoints serve ``attnrec recommend``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from attnrec.cli import main

CONFIGS = Path(__file__).parents[2] / "plugins" / "attnrec_graph" / "configs"
TINY = (
    "--data.init_args.num_users=200", "--data.init_args.num_items=150", "--data.init_args.max_len=20",
    "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false", "--model.init_args.dim=16",
)  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


@pytest.mark.parametrize("config", ["lightgcn", "graph_attention", "kg_attention"])
def test_config_trains_one_epoch_and_recommends(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--config", str(CONFIGS / f"{config}.yaml"), *TINY, f"--trainer.default_root_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ Recall@20\s+│\s+0\.\d+ │", out), out
    assert "split=random per user" in out and "loss=BPRLoss" in out
    found = re.search(r"^best checkpoint: (.+\.ckpt)$", out, re.MULTILINE)
    assert found, out
    assert main(["recommend", "--ckpt_path", found.group(1), "--user", "3", "-k", "5"]) == 0
    table = capsys.readouterr().out
    assert "top 5 for user 3" in table and len(re.findall(r"^│ [1-5]\s+│", table, re.MULTILINE)) == 5
