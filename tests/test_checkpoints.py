"""Checkpoints are self-contained and checked: ``recommend`` serves from the checkpoint alone
(never the training file, wherever it runs and whatever was appended to the file since);
modified, empty, cut-short and other-catalogue checkpoints, and overrides that contradict a
checkpoint, are refused with errors that name the file and the difference.

One tiny model is trained through the CLI from CSV files given by relative paths (a few
seconds); the tests load it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch

from attnrec import ItemCatalog, Recommender
from attnrec.checkpoints import CheckpointError
from attnrec.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

DATA = (
    "--data=InteractionDataModule", "--data.path=ratings.csv", "--data.items_path=items.csv", "--data.max_len=20",
    "--data.batch_size=64",
)  # fmt: skip
QUIET = ("--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


@dataclass(frozen=True)
class Run:
    folder: Path  # where it trained: ratings.csv and items.csv
    checkpoint: Path


@contextlib.contextmanager
def inside(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    from attnrec.data import generate

    folder = tmp_path_factory.mktemp("shop")
    interactions, items = generate(num_users=200, num_items=150)
    interactions.to_pandas().to_csv(folder / "ratings.csv", index=False)
    items.to_pandas()[["item", "title"]].to_csv(folder / "items.csv", index=False)
    with inside(folder):
        code = main(["fit", *DATA, *QUIET, "--model.dim=16", "--model.user_encoder.init_args.num_layers=1",
                     "--trainer.max_epochs=2", "--trainer.limit_test_batches=1"])  # fmt: skip
    assert code == 0
    (checkpoint,) = (folder / "lightning_logs" / "version_0" / "checkpoints").glob("best-*.ckpt")
    return Run(folder, checkpoint)


def recommended(capsys: pytest.CaptureFixture[str], checkpoint: Path, *args: str) -> str:
    assert main(["recommend", "--ckpt_path", str(checkpoint), "-k", "5", *args]) == 0
    return capsys.readouterr().out


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """stderr of an ``attnrec`` command that must fail with one clear screen."""
    assert main(list(args)) == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.splitlines()) <= 6, error
    return error


# ------------------------------------------------------------ self-contained
def test_recommend_serves_from_the_checkpoint_alone(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(run.folder)
    before = recommended(capsys, run.checkpoint, "--user", "3", "--user", "7")
    top = re.findall(r"│ \d+\s+│ (\d+)\s+│", before.split("top 5 for user 7")[0])
    assert len(top) == 5
    with (run.folder / "ratings.csv").open("a") as handle:  # user 3 "has" its recommendations now
        handle.writelines(f"3,{item},{2e9 + i}\n" for i, item in enumerate(top))
    assert recommended(capsys, run.checkpoint, "--user", "3", "--user", "7") == before
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(run.checkpoint, moved / "model.ckpt")
    monkeypatch.chdir(moved)  # the stored relative path means nothing here, and the data is gone
    shutil.move(run.folder / "ratings.csv", tmp_path / "ratings.csv")
    try:
        assert recommended(capsys, moved / "model.ckpt", "--user", "3", "--user", "7") == before
    finally:
        shutil.move(tmp_path / "ratings.csv", run.folder / "ratings.csv")


def test_recommend_after_a_given_history(run: Run, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = recommended(capsys, run.checkpoint, "--history", "5, 17,42")
    assert "top 5 for history 5,17,42 (3 interactions)" in out
    items = {int(item) for item in re.findall(r"│ \d+\s+│ (\d+)\s+│", out)}
    assert len(items) == 5 and not items & {5, 17, 42}
    with pytest.raises(SystemExit, match=r"item '9999' is not in the checkpoint's catalogue"):
        main(["recommend", "--ckpt_path", str(run.checkpoint), "--history", "5,9999"])


def test_recommend_reads_data_only_when_given(run: Run, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(run.folder)
    config = run.checkpoint.parent.parent / "config.yaml"
    assert recommended(capsys, run.checkpoint, "--user", "7", "--data", str(config)) == recommended(
        capsys, run.checkpoint, "--user", "7"
    )
    other = tmp_path / "other.yaml"
    other.write_text("data:\n  class_path: attnrec.data.SyntheticDataModule\n  init_args: {num_users: 50, num_items: 130}\n")
    error = refused(capsys, "recommend", "--ckpt_path", str(run.checkpoint), "--user", "7", "--data", str(other))
    assert "trained on another catalogue" in error and str(run.checkpoint) in error


def test_serving_batches_equal_the_data_modules_own() -> None:
    """What the checkpoint stores rebuilds exactly the batches ``user_batch`` gives, for the
    core's sequence data and for MIND (a data module of another shape)."""
    from attnrec.data import SyntheticDataModule
    from attnrec.data.serving import ServingData, serving_state
    from attnrec_news.mind import MINDDataModule

    synthetic = SyntheticDataModule(num_users=60, num_items=130, max_len=8, batching="fixed")  # padded to max_len
    for data in (synthetic, MINDDataModule(sample_users=40, sample_news=120, max_len=6)):
        data.setup("fit")
        serving = ServingData(serving_state(data), data.catalog)
        users = [data.user_map.raw[i] for i in (1, 2, len(data.user_map))]
        expected, got = data.user_batch(users), serving.user_batch([str(user) for user in users])
        assert set(got) == {"user", "history", "seen"} <= set(expected), type(data).__name__
        for key in got:
            assert torch.equal(got[key], expected[key]), (type(data).__name__, key)


# -------------------------------------------------------------------- integrity
def test_a_modified_tensor_is_refused(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = torch.load(run.checkpoint, weights_only=True)
    name = next(key for key, value in state["state_dict"].items() if value.dtype == torch.float32 and value.numel() > 100)
    state["state_dict"][name].view(-1)[7:8].view(torch.int32).bitwise_xor_(1)  # one bit of one weight
    tampered = tmp_path / "tampered.ckpt"
    torch.save(state, tampered)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(tampered))}: its tensors do not match the checksum"):
        Recommender.load_from_checkpoint(tampered)
    error = refused(capsys, "recommend", "--ckpt_path", str(tampered), "--user", "3")
    assert str(tampered) in error and "checksum" in error


def test_empty_and_cut_short_checkpoints_are_named(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty, short = tmp_path / "empty.ckpt", tmp_path / "short.ckpt"
    empty.touch()
    data = run.checkpoint.read_bytes()
    short.write_bytes(data[: len(data) // 2])
    for path, what in ((empty, "the file is empty"), (short, "not a readable checkpoint, or cut short")):
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: {what}"):
            Recommender.load_from_checkpoint(path)
        for command in ("validate", "test"):
            assert f"{path}: {what}" in refused(capsys, command, f"--ckpt_path={path}")
        assert f"{path}: {what}" in refused(capsys, "recommend", "--ckpt_path", str(path), "--user", "3")


def test_another_catalogue_is_refused_naming_the_sizes(
    run: Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = torch.load(run.checkpoint, weights_only=True)["attnrec_catalog"]["num_items"]
    with pytest.raises(CheckpointError, match=rf"another catalogue \(items: {saved} in the checkpoint, 300 here"):
        Recommender.load_from_checkpoint(run.checkpoint, catalog=ItemCatalog(num_items=300))
    error = refused(
        capsys, "validate", f"--ckpt_path={run.checkpoint}", "--data=SyntheticDataModule", "--data.num_users=60",
        "--data.num_items=130", "--data.max_len=20", *QUIET,
    )  # fmt: skip
    assert f"{run.checkpoint}: trained on another catalogue (items: {saved} in the checkpoint, 130 here" in error
    monkeypatch.chdir(run.folder)
    ids = ItemCatalog.from_state(torch.load(run.checkpoint, weights_only=True)["attnrec_catalog"]).raw_ids
    shuffled = ItemCatalog(num_items=saved, raw_ids=[None, *reversed(ids[1:])])
    with pytest.raises(CheckpointError, match=r"as many items .* but other ids: internal id 1 is item"):
        Recommender.load_from_checkpoint(run.checkpoint, catalog=shuffled)


def test_an_override_the_checkpoint_contradicts_is_refused(
    run: Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(run.folder)
    error = refused(capsys, "validate", f"--ckpt_path={run.checkpoint}", *DATA, *QUIET, "--model.init_args.dim=32")
    assert f"{run.checkpoint}: --model.init_args.dim=32 conflicts with the checkpoint's 16" in error
    # an argument that agrees with the checkpoint is no conflict
    assert main(["validate", f"--ckpt_path={run.checkpoint}", *DATA, *QUIET, "--model.dim=16"]) == 0
