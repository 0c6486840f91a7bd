"""SASRec, DIN and BST learn the bundled shop data's planted structure (they beat the most-popular
baseline under the same protocol) and explain every prediction with attention weights."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from attnrec import Recommender
from attnrec.data import SyntheticDataModule
from attnrec.evaluation import evaluate_popularity
from attnrec_ecommerce import BST, DIN, SASRec
from attnrec_ecommerce.target import shift_windows

DATA: dict[str, Any] = dict(num_users=300, num_items=150, num_categories=8, max_len=20, batch_size=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """The test machines' cores are shared: a second intra-op thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit_and_test(model: Recommender, data: SyntheticDataModule, epochs: int) -> dict[str, float]:
    trainer = L.Trainer(
        max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    return model.test_results


@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "BCELoss"])
def test_sasrec_beats_popularity(loss: str) -> None:
    """Full ranking over all items; the paper's BCE with one negative and full-softmax CE both learn."""
    L.seed_everything(0)
    data = SyntheticDataModule(**DATA, num_negatives=1 if loss == "BCELoss" else 0)
    popularity = evaluate_popularity(data, "test")
    model = SASRec(data.catalog, dim=32, max_len=20, num_layers=2, num_heads=2, loss=loss, lr=5e-3)
    results = fit_and_test(model, data, epochs=6 if loss == "CrossEntropyLoss" else 10)
    assert results["NDCG@10"] > 1.5 * popularity["NDCG@10"], (results["NDCG@10"], popularity)
    assert results["HR@10"] > popularity["HR@10"] + 0.1


def test_din_beats_popularity_with_auc() -> None:
    """Candidate lists (target + 30 sampled items); DIN also reports AUC and GAUC."""
    L.seed_everything(0)
    data = SyntheticDataModule(**DATA, num_negatives=1, eval_negatives=30)
    popularity = evaluate_popularity(data, "test")
    model = DIN(data.catalog, dim=16, attention_hidden=(32, 16), hidden=(64, 32), lr=1e-2, train_positions=8)
    results = fit_and_test(model, data, epochs=12)
    assert results["NDCG@10"] > popularity["NDCG@10"] + 0.05, (results["NDCG@10"], popularity)
    assert results["AUC"] > 0.65 and 0.0 < results["GAUC"] <= 1.0


def test_bst_beats_popularity() -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(**DATA, num_negatives=1, eval_negatives=30)
    popularity = evaluate_popularity(data, "test")
    model = BST(data.catalog, dim=32, max_len=20, num_heads=2, hidden=(64, 32), dropout=0.0, lr=5e-3, train_positions=8)
    results = fit_and_test(model, data, epochs=15)
    assert results["NDCG@10"] > popularity["NDCG@10"] + 0.05, (results["NDCG@10"], popularity)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    data = SyntheticDataModule(**DATA, eval_negatives=5)
    data.setup("test")
    return next(iter(data.test_dataloader()))


def test_attention_weights_shapes(batch: dict[str, torch.Tensor]) -> None:
    data = SyntheticDataModule(**DATA)
    b, length = batch["history"].shape
    candidates = batch["candidates"]  # [B, 6]
    sasrec = SASRec(data.catalog, dim=16, max_len=20, num_layers=2, num_heads=2).eval()
    weights = sasrec.attention_weights(batch)
    assert sorted(weights) == ["layer0", "layer1"] and weights["layer0"].shape == (b, 2, length, length)
    causal = weights["layer1"].triu(diagonal=1)
    assert torch.all(causal == 0), "SASRec attends to the future"

    din = DIN(data.catalog, dim=16).eval()
    target = din.attention_weights(batch)["target"]
    assert target.shape == (b, 1, candidates.shape[1], length)
    padded = (batch["history"] == 0)[:, None, None, :].expand_as(target)
    assert torch.all(target[padded] == 0), "DIN weights a padding slot"

    bst = BST(data.catalog, dim=16, max_len=20, num_heads=4, num_layers=2).eval()
    weights = bst.attention_weights(batch)
    assert sorted(weights) == ["layer0", "layer1"]
    assert weights["layer0"].shape == (b, candidates.shape[1], 4, length + 1, length + 1)
    rows = weights["layer0"].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_target_aware_scores_do_not_depend_on_chunking(batch: dict[str, torch.Tensor]) -> None:
    """Full ranking scores the catalogue in chunks; a candidate's score must not depend on them."""
    data = SyntheticDataModule(**DATA)
    for model in (DIN(data.catalog, dim=16, candidate_chunk=7), BST(data.catalog, dim=16, max_len=20, candidate_chunk=7)):
        model.eval()
        with torch.no_grad():
            chunked = model.scoring(batch).chunk(0, 40)
            ids = torch.arange(40).expand(batch["history"].shape[0], -1)
            whole = model.score_candidates(batch["history"], ids)
        assert torch.allclose(chunked, whole, atol=1e-5)


def test_target_aware_models_add_the_item_bias_to_every_score(batch: dict[str, torch.Tensor]) -> None:
    data = SyntheticDataModule(**DATA)
    torch.manual_seed(0)
    for cls, kwargs in ((DIN, {}), (BST, {"max_len": 20})):
        plain = cls(data.catalog, dim=16, **kwargs).eval()
        biased = cls(data.catalog, dim=16, item_bias=True, **kwargs).eval()
        biased.load_state_dict(plain.state_dict() | {"item_bias": torch.randn(data.num_items + 1)})
        ids = torch.arange(1, 40).expand(batch["history"].shape[0], -1)
        with torch.no_grad():
            expected = plain.scoring(batch).items(ids) + biased.item_bias[ids]
            assert torch.allclose(biased.scoring(batch).items(ids), expected, atol=1e-5)
            assert torch.allclose(biased.scoring(batch).chunk(1, 40), expected, atol=1e-5)


def test_shift_windows_realigns_prefixes() -> None:
    history = torch.tensor([[0, 5, 6, 7]])
    out = shift_windows(history, torch.tensor([0, 0, 0]), torch.tensor([3, 2, 1]))
    assert out.tolist() == [[0, 5, 6, 7], [0, 0, 5, 6], [0, 0, 0, 5]]


def test_target_aware_models_need_negatives() -> None:
    data = SyntheticDataModule(**DATA)
    data.setup("fit")
    train_batch = next(iter(data.train_dataloader()))
    with pytest.raises(ValueError, match="num_negatives"):
        DIN(data.catalog, dim=16).training_step(train_batch, 0)


def test_unknown_feature_lists_available() -> None:
    data = SyntheticDataModule(**DATA)
    with pytest.raises(ValueError, match="available: category"):
        DIN(data.catalog, dim=16, features=["brand"])


def test_checkpoint_round_trip(tmp_path, batch: dict[str, torch.Tensor]) -> None:
    """Each model rebuilds from its own hyper-parameters (not the factories it builds)."""
    data = SyntheticDataModule(**DATA)
    for cls, kwargs in ((SASRec, dict(max_len=20)), (DIN, {}), (BST, dict(max_len=20))):
        model = cls(data.catalog, dim=16, **kwargs).eval()
        trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(model)
        path = tmp_path / f"{cls.__name__}.ckpt"
        trainer.save_checkpoint(path)
        loaded = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
        with torch.no_grad():
            assert torch.allclose(model.rank(batch).ranks, loaded.rank(batch).ranks)


def test_target_aware_recommend_excludes_seen(batch: dict[str, torch.Tensor]) -> None:
    """``recommend`` ranks the whole catalogue through the candidate scoring (no targets to find)."""
    data = SyntheticDataModule(**DATA)
    model = DIN(data.catalog, dim=16).eval()
    items, scores = model.recommend(batch, k=5)
    assert items.shape == scores.shape == (batch["history"].shape[0], 5)
    assert not (items.unsqueeze(-1) == batch["seen"].unsqueeze(1)).any()
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
