"""Graph models learn the planted structure, their attention is a proper per-node softmax that
matches a hand computation, explanations name real neighbours, and checkpoints reload."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import lightning as L
import pytest
import torch
from attnrec.data import SyntheticDataModule
from attnrec.evaluation import evaluate_popularity
from attnrec.model import Recommender
from torch_geometric.utils import scatter

from attnrec_graph.data import SyntheticKGDataModule
from attnrec_graph.encoders import GraphAttentionEncoder, KGAttentionEncoder, LightGCNEncoder
from attnrec_graph.layers import BilinearGraphAttention, KnowledgeGraphAttention
from attnrec_graph.model import GraphRecommender

SMALL = dict(num_users=200, num_items=150, max_len=20, batch_size=64, split="ratio", num_negatives=1)
ENCODERS: dict[str, Callable[..., Any]] = {
    "lightgcn": LightGCNEncoder,
    "bilinear": functools.partial(GraphAttentionEncoder, attention="bilinear"),
    "gatv2": functools.partial(GraphAttentionEncoder, attention="gatv2"),
    "kg": KGAttentionEncoder,
}


def _trainer(**kwargs: Any) -> L.Trainer:
    options = dict(
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    return L.Trainer(**(options | kwargs))


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[GraphRecommender, SyntheticDataModule, dict[str, float]]]:
    """Each model trained 8 epochs on small synthetic data (seconds each), with its test metrics."""
    out = {}
    for name, encoder in ENCODERS.items():
        data = SyntheticKGDataModule(**{k: v for k, v in SMALL.items() if k != "split"}) if name == "kg" else SyntheticDataModule(**SMALL)
        L.seed_everything(0)
        model = GraphRecommender(data.catalog, dim=32, item_encoder=encoder, lr=0.02, metrics=("Recall", "NDCG"), ks=(20,))
        trainer = _trainer(max_epochs=8)
        trainer.fit(model, datamodule=data)
        results = trainer.test(model, datamodule=data, verbose=False)[0]
        out[name] = (model, data, results)
    return out


@pytest.fixture(scope="module")
def popularity() -> dict[str, float]:
    return evaluate_popularity(SyntheticDataModule(**SMALL), "test", metrics=("Recall", "NDCG"), ks=(20,))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_each_model_beats_popularity_on_planted_structure(name: str, trained, popularity) -> None:
    _, _, results = trained[name]
    for metric in ("Recall@20", "NDCG@20"):
        assert results[f"test/{metric}"] > 1.2 * popularity[metric], (name, metric, results, popularity)


def test_bilinear_attention_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    layer = BilinearGraphAttention(4, heads=2)
    with torch.no_grad():
        layer.weight.normal_()
        layer.value.weight.normal_()
    x = torch.randn(5, 4)
    # node 0 (a user) attends over nodes 1, 2, 3 (its items); node 4 over 0 only
    edge_index = torch.tensor([[1, 2, 3, 0], [0, 0, 0, 4]])
    y, alpha = layer(x, edge_index, return_attention_weights=True)
    assert alpha.shape == (4, 2)
    torch.testing.assert_close(scatter(alpha, edge_index[1], dim=0, dim_size=5, reduce="sum")[[0, 4]], torch.ones(2, 2))
    value = x @ layer.value.weight.T
    expected_y0 = x[0].clone()
    for h in range(2):
        part = slice(2 * h, 2 * h + 2)
        scores = torch.stack([x[0, part] @ layer.weight[h] @ x[j, part] for j in (1, 2, 3)])  # h_u^T W l_i
        weights = torch.softmax(scores, dim=0)
        torch.testing.assert_close(alpha[:3, h], weights)
        expected_y0[part] += (weights[:, None] * value[[1, 2, 3], part]).sum(0)  # y_u = h_u + sum alpha z_i
    torch.testing.assert_close(y[0], expected_y0)
    torch.testing.assert_close(y[1], x[1])  # no neighbours: just h_u


def test_untrained_bilinear_attention_is_a_uniform_mean() -> None:
    layer = BilinearGraphAttention(6, heads=3)
    x = torch.randn(4, 6)
    _, alpha = layer(x, torch.tensor([[1, 2, 3], [0, 0, 0]]), return_attention_weights=True)
    torch.testing.assert_close(alpha, torch.full((3, 3), 1 / 3))


def test_kg_attention_weights_are_a_softmax_per_node() -> None:
    layer = KnowledgeGraphAttention(8, num_relations=3, heads=2)
    x = torch.randn(6, 8)
    edge_index = torch.tensor([[1, 2, 3, 4, 0, 5], [0, 0, 0, 0, 5, 1]])
    edge_type = torch.tensor([0, 1, 2, 2, 1, 0])
    out, alpha = layer(x, edge_index, edge_type, return_attention_weights=True)
    assert out.shape == (6, 8) and alpha.shape == (6, 2)
    sums = scatter(alpha, edge_index[1], dim=0, dim_size=6, reduce="sum")
    torch.testing.assert_close(sums[[0, 1, 5]], torch.ones(3, 2))
    assert not torch.allclose(alpha[:4, 0], alpha[0, 0].expand(4))  # relations change the weights


@pytest.mark.parametrize("name", ["bilinear", "gatv2", "kg"])
def test_edge_attention_sums_to_one_over_each_nodes_neighbours(name: str, trained) -> None:
    model = trained[name][0]
    edge_index, weights = model.edge_attention()
    assert weights.shape[:2] == (model.graph.num_layers, edge_index.shape[1])
    sums = scatter(weights, edge_index[1], dim=1, dim_size=model.graph.layout.num_nodes, reduce="sum")
    has_neighbours = torch.zeros(model.graph.layout.num_nodes, dtype=torch.bool)
    has_neighbours[edge_index[1]] = True
    torch.testing.assert_close(sums[:, has_neighbours], torch.ones_like(sums[:, has_neighbours]))


def test_explain_lists_the_users_training_items_by_contribution(trained) -> None:
    model, data, _ = trained["bilinear"]
    user = 5
    batch = {"user": torch.tensor([user]), "history": torch.zeros(1, 1, dtype=torch.long),
             "seen": torch.as_tensor(data.split_data.train[user]).unsqueeze(0)}  # fmt: skip
    model.eval()
    top_item = int(model.recommend(batch, k=1)[0][0, 0])
    reasons = model.explain(user, top_item, k=3)
    assert len(reasons) == 3
    assert all(r.kind == "item" and r.id in set(data.split_data.train[user].tolist()) for r in reasons)
    contributions = [r.contribution for r in reasons]
    assert contributions == sorted(contributions, reverse=True)
    assert all(0 < r.attention <= 1 for r in reasons)
    assert reasons[0].name == data.catalog.title(reasons[0].id)
    everyone = model.neighbours("user", user, k=1000)
    assert {r.id for r in everyone} == set(data.split_data.train[user].tolist())
    assert sum(r.attention for r in everyone) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="id in 1..200"):
        model.explain(0, top_item)


@pytest.mark.parametrize("name", ["lightgcn", "gatv2", "kg"])
def test_checkpoint_round_trip_gives_the_same_rankings(name: str, trained, tmp_path: Path) -> None:
    model, data, _ = trained[name]
    trainer = _trainer(max_epochs=0)
    trainer.fit(model, datamodule=data)  # attaches the data so the checkpoint records it
    path = tmp_path / "graph.ckpt"
    trainer.save_checkpoint(path)
    restored = Recommender.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert type(restored) is GraphRecommender and type(restored.graph) is type(model.graph)
    batch = next(iter(data.test_dataloader()))
    model.eval(), restored.eval()
    with torch.no_grad():
        expected, got = model.rank(batch), restored.rank(batch)
    torch.testing.assert_close(got.ranks, expected.ranks)
    torch.testing.assert_close(got.topk, expected.topk)


def test_graph_recommender_refuses_a_non_graph_item_encoder() -> None:
    from attnrec.encoders import IdItemEncoder

    with pytest.raises(TypeError, match="graph item encoder"):
        GraphRecommender(SyntheticDataModule(**SMALL).catalog, dim=8, item_encoder=IdItemEncoder)


def test_propagation_follows_weights_loaded_by_assignment() -> None:
    """load_state_dict(assign=True) replaces the tensors without moving their version counters:
    a propagation keyed on versions alone served the old vectors."""
    catalog = SyntheticDataModule(**SMALL).catalog
    torch.manual_seed(0)
    model, other = LightGCNEncoder(catalog, 8).eval(), LightGCNEncoder(catalog, 8).eval()
    with torch.no_grad():
        model.propagate()
        model.load_state_dict(other.state_dict(), assign=True)
        assert torch.allclose(model.vectors(), other.vectors())
        assert torch.allclose(model.users(torch.tensor([1, 2])), other.users(torch.tensor([1, 2])))
