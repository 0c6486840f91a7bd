"""Resuming: ``attnrec fit --ckpt_path last`` after a run was killed ends exactly where an
uninterrupted run with the same seed ends; an interrupt saves ``last.ckpt``; with nothing to
resume the command fails instead of training from scratch.

The resume test runs the real command in subprocesses (a SIGKILL leaves no chance to save
anything, as a crash or an out-of-memory kill) on tiny data: about 20 s.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnrec.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

DATA = {"num_users": 200, "num_items": 150, "max_len": 20, "batch_size": 64, "eval_batch_size": 256}
# mode: min makes an early epoch the best one (NDCG rises with training), so a resumed run that
# forgot the best score would take one of its own later epochs as best and test another model.
CONFIG = """
seed_everything: 7
trainer:
  max_epochs: 4
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: attnrec.checkpoints.ResumableCheckpoint
      init_args: {{monitor: val/NDCG@10, mode: min, filename: "best-{{epoch}}", save_last: true}}
model:
  class_path: attnrec.Recommender
  init_args:
    dim: 16
    lr: 0.01
    user_encoder:
      class_path: attnrec.encoders.TransformerUserEncoder
      init_args: {{num_layers: 1, dropout: 0.2}}
data:
  class_path: attnrec.data.SyntheticDataModule
  init_args: {data}
"""
KILLER = """
import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptAt(KillAt):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("resume")
    (tmp / "config.yaml").write_text(CONFIG.format(data=DATA).replace("'", ""))
    (tmp / "killer.py").write_text(KILLER)
    return tmp


def attnrec(workdir: Path, root: Path, *args: str) -> subprocess.Popen:
    root.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", ATTNREC_LOAD_PLUGINS="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "attnrec.cli", "fit", "--config", str(workdir / "config.yaml"),
               f"--trainer.default_root_dir={root}", *args]  # fmt: skip
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out + err


def logged(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def validation(run: Path) -> dict[int, str]:
    return {int(row["epoch"]): row["val/NDCG@10"] for row in logged(run) if row.get("val/NDCG@10")}


def final_metrics(run: Path) -> dict[str, str]:
    (row,) = [row for row in logged(run) if row.get("test/NDCG@10")]
    return {key: value for key, value in row.items() if key.startswith("test/")}


def test_killed_mid_epoch_and_resumed_from_last_equals_an_uninterrupted_run(workdir: Path) -> None:
    from attnrec.data import SyntheticDataModule

    steps = len(SyntheticDataModule(**DATA).train_dataloader())
    kill = random.randrange(2 * steps + 1, 3 * steps)  # inside epoch 2, after the epoch-1 last.ckpt
    whole = attnrec(workdir, workdir / "whole")
    killed = attnrec(workdir, workdir / "killed", "--trainer.callbacks+=killer.KillAt", f"--trainer.callbacks.step={kill}")
    (code, whole_out), (killed_code, killed_out) = finish(whole), finish(killed)
    assert code == 0, whole_out
    assert killed_code == -signal.SIGKILL, f"kill at step {kill}:\n{killed_out}"
    first = workdir / "killed" / "lightning_logs" / "version_0"
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1

    code, resumed_out = finish(attnrec(workdir, workdir / "killed", "--ckpt_path", "last"))
    assert code == 0, resumed_out
    resumed = workdir / "killed" / "lightning_logs" / "version_1"  # a run of its own, logs of the first kept
    best = [re.search(r"^best checkpoint: .*(best-epoch=\d+)\.ckpt$", out, re.MULTILINE) for out in (whole_out, resumed_out)]
    assert best[0] and best[1] and best[0].group(1) == best[1].group(1), f"kill at step {kill}"
    whole_run = workdir / "whole" / "lightning_logs" / "version_0"
    after = {epoch: value for epoch, value in validation(whole_run).items() if epoch >= 2}
    assert {epoch: validation(resumed)[epoch] for epoch in after} == after, f"kill at step {kill}"
    assert final_metrics(resumed) == final_metrics(whole_run), f"kill at step {kill}"
    weights = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in (whole_run, resumed)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0]), f"kill at step {kill}"


def test_an_interrupt_saves_last_ckpt_at_its_step(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(workdir))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown on Ctrl+C
            main(["fit", "--config", str(workdir / "config.yaml"), f"--trainer.default_root_dir={tmp_path}",
                  "--trainer.callbacks+=killer.InterruptAt", "--trainer.callbacks.step=3", "--trainer.max_epochs=1"])  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl+C while it shuts down
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3
    assert [path.name for path in folder.iterdir()] == ["last.ckpt"]  # no file named like a best one


def test_resume_with_nothing_to_resume_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = [f"--data.{key}={value}" for key, value in DATA.items()]  # before this was refused, it trained from scratch
    assert main(["fit", "--ckpt_path", "last", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1", *tiny]) == 1
    error = capsys.readouterr().err
    assert "--ckpt_path last: no last.ckpt in" in error and str(tmp_path) in error and "Traceback" not in error
    assert not list(tmp_path.rglob("*.ckpt"))
