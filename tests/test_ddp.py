"""DDP through the real CLI: 2 CPU processes (gloo) train, and validate a checkpoint to exactly
the figures of 1 process, every user counted once.

Not marked slow on purpose: CI must run it (about 3 CLI launches on tiny data). The 121 users
split 61/60 across two processes, where Lightning's default padded sampler would count one
user twice and move every figure.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnrec.data import SyntheticDataModule

SCRIPT = Path(sys.executable).with_name("attnrec")  # the installed console script, as a user runs it
ATTNREC = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "attnrec.cli"]
NUM_USERS = 121

CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_epochs: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: attnrec.Recommender
  init_args:
    dim: 16
    history_slices: [25]
    user_encoder:
      class_path: attnrec.encoders.TransformerUserEncoder
      init_args: {{num_layers: 1, max_len: 30}}
data:
  class_path: attnrec.data.SyntheticDataModule
  init_args: {{num_users: {users}, num_items: 120, max_len: 30, batch_size: 64, eval_batch_size: 16}}
"""

# Records, per process, which users each validation batch held and the evaluator's list count.
PROBE = '''
import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class ListProbe(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.users: list[int] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.users += batch["user"].tolist()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        record = {"users": self.users, "lists": float(pl_module.evaluator.lists)}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
'''


def run_cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # two processes on a small shared CPU
        ATTNREC_LOAD_PLUGINS="",  # the core alone: a domain plugin under construction cannot interfere
        PYTHONPATH=os.pathsep.join(filter(None, [str(tmp), env.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        [*ATTNREC, *args, "--config", str(tmp / "config.yaml")], cwd=tmp, env=env,
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, f"attnrec {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def logged(save_dir: Path) -> dict[str, float]:
    (path,) = save_dir.rglob("metrics.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith("val/") and value}


def csv_logger(save_dir: Path) -> list[str]:
    return ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={save_dir}"]


def probe(out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True)
    return ["--trainer.callbacks+=ddp_probe.ListProbe", f"--trainer.callbacks.out_dir={out_dir}"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "config.yaml").write_text(CONFIG.format(users=NUM_USERS))
    (tmp / "ddp_probe.py").write_text(PROBE)
    return tmp


@pytest.fixture(scope="module")
def checkpoint(workdir: Path) -> Path:
    """The smoke run: one epoch of 2-process DDP training that writes a checkpoint."""
    done = run_cli(
        workdir, "fit", "--trainer.devices=2", "--trainer.strategy=ddp", *csv_logger(workdir / "fit"),
        "--trainer.callbacks.dirpath", str(workdir / "ckpt"),
    )  # fmt: skip
    assert "test metrics" in done.stdout and "protocol" in done.stdout
    (path,) = (workdir / "ckpt").glob("best-*.ckpt")  # last.ckpt is written beside it
    return path


def test_two_process_fit_trains(workdir: Path, checkpoint: Path) -> None:
    fit = logged(workdir / "fit")
    assert fit["val/HR@10"] > 0 and 0 < fit["val/AUC"] < 1
    # each process stepped through its half of the training windows (one process would take twice as many steps)
    windows = len(SyntheticDataModule(num_users=NUM_USERS, num_items=120, max_len=30).train_dataloader().dataset)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["global_step"] == math.ceil(math.ceil(windows / 2) / 64) > 0


def test_two_process_validation_equals_one_process(workdir: Path, checkpoint: Path) -> None:
    results, records = {}, {}
    for devices in (1, 2):
        out = workdir / f"validate{devices}"
        strategy = ["--trainer.strategy=ddp"] if devices == 2 else []
        run_cli(
            workdir, "validate", f"--ckpt_path={checkpoint}", f"--trainer.devices={devices}", *strategy,
            *csv_logger(out / "logs"), *probe(out / "probe"),
        )  # fmt: skip
        results[devices] = logged(out / "logs")
        records[devices] = [json.loads(p.read_text()) for p in sorted((out / "probe").glob("rank*.json"))]

    # every user evaluated exactly once: the ranks' users are disjoint and cover the 1-process run
    assert len(records[1]) == 1 and len(records[2]) == 2
    single = records[1][0]["users"]
    split = [r["users"] for r in records[2]]
    assert sorted(len(u) for u in split) == [60, 61]
    assert sorted(split[0] + split[1]) == sorted(single)
    assert len(set(single)) == len(single) == NUM_USERS  # every synthetic user has a val target
    assert sum(r["lists"] for r in records[2]) == records[1][0]["lists"] == NUM_USERS

    # the same figures: the float64 sums agree to rounding, and the logged values are float32,
    # so allow one float32 rounding step (relative 1e-6), far below one user's weight (1/121)
    assert set(results[1]) == set(results[2]) and len(results[1]) >= 10
    # the history slice (windows of at most 25 items) is as exact as the whole, and neither empty nor everyone
    assert 0 < results[1]["val/history<=25/lists"] < NUM_USERS
    for name, value in results[1].items():
        assert results[2][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
