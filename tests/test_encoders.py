"""User/item encoders and scorers: causality, padding invariance, shapes."""

from __future__ import annotations

import functools

import pytest
import torch

from attnrec.attention import AdditiveAttention, MultiHeadAttention
from attnrec.encoders import IdItemEncoder, PoolingUserEncoder, TransformerUserEncoder
from attnrec.interfaces import ItemCatalog
from attnrec.scorers import BilinearScorer, CosineScorer, DotScorer, MLPScorer

D, N = 16, 30


@pytest.fixture()
def items() -> IdItemEncoder:
    torch.manual_seed(0)
    return IdItemEncoder(ItemCatalog(N), D, init_std=0.5).eval()


def _left_pad(rows: list[list[int]], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(r)) + r for r in rows])


def test_item_encoder_padding_row_is_zero(items: IdItemEncoder) -> None:
    assert (items(torch.tensor([0])) == 0).all()
    assert items.all_items().shape == (N + 1, D)


def test_transformer_is_causal(items: IdItemEncoder) -> None:
    torch.manual_seed(0)
    encoder = TransformerUserEncoder(D, num_layers=2, max_len=8, dropout=0.0).eval()
    history = _left_pad([[3, 5, 7, 9, 11], [2, 4, 6, 8, 10]], 8)
    changed = history.clone()
    changed[:, 6] = torch.tensor([20, 21])  # the second-to-last item
    a = encoder({"history": history}, items, all_positions=True).vectors
    b = encoder({"history": changed}, items, all_positions=True).vectors
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)  # earlier positions cannot see it
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-3)  # it and later positions do


def test_bidirectional_transformer_sees_the_future(items: IdItemEncoder) -> None:
    torch.manual_seed(0)
    encoder = TransformerUserEncoder(D, num_layers=1, max_len=8, dropout=0.0, causal=False).eval()
    history = _left_pad([[3, 5, 7, 9]], 8)
    changed = history.clone()
    changed[0, -1] = 12
    a = encoder({"history": history}, items, all_positions=True).vectors
    b = encoder({"history": changed}, items, all_positions=True).vectors
    assert not torch.allclose(a[:, 4], b[:, 4], atol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_transformer_output_does_not_depend_on_padding(items: IdItemEncoder, causal: bool) -> None:
    torch.manual_seed(0)
    encoder = TransformerUserEncoder(D, num_layers=2, max_len=12, dropout=0.0, causal=causal).eval()
    seq = [4, 8, 15, 16, 23]
    vectors = [encoder({"history": _left_pad([seq], length)}, items).vectors for length in (5, 7, 12)]
    assert all(torch.isfinite(v).all() for v in vectors)
    assert torch.allclose(vectors[0], vectors[1], atol=1e-5)
    assert torch.allclose(vectors[0], vectors[2], atol=1e-5)
    # and a user's vector does not depend on who shares the batch
    batch = _left_pad([seq, [1, 2], [29]], 12)
    assert torch.allclose(encoder({"history": batch}, items).vectors[0], vectors[2][0], atol=1e-5)


def test_transformer_single_item_histories_are_finite(items: IdItemEncoder) -> None:
    """Left padding + causal + key padding: the first real position has only itself to attend to."""
    torch.manual_seed(0)
    encoder = TransformerUserEncoder(D, num_layers=2, max_len=10).eval()
    history = _left_pad([[7], [1, 2], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], 10)
    out = encoder({"history": history}, items, all_positions=True, need_weights=True)
    assert torch.isfinite(out.vectors).all()
    assert sorted(out.weights) == ["layer0", "layer1"]
    weights = out.weights["layer0"]
    assert weights.shape == (3, 2, 10, 10)
    assert torch.allclose(weights[0, :, -1, -1], torch.ones(2))  # one item: attends only to itself
    assert (weights[1, :, -1, :8] == 0).all()  # never to padding


def test_transformer_rejects_long_histories(items: IdItemEncoder) -> None:
    encoder = TransformerUserEncoder(D, max_len=4)
    with pytest.raises(ValueError, match=r"history length 6 exceeds max_len=4.*data module's max_len"):
        encoder({"history": torch.ones(2, 6, dtype=torch.long)}, items)


def test_transformer_takes_another_attention(items: IdItemEncoder) -> None:
    encoder = TransformerUserEncoder(D, num_layers=1, max_len=6, attention=functools.partial(MultiHeadAttention, num_heads=4))
    assert encoder.blocks[0].attention.num_heads == 4
    assert encoder({"history": _left_pad([[1, 2]], 6)}, items).vectors.shape == (1, D)


def test_pooling_encoder_is_order_free_and_ignores_padding(items: IdItemEncoder) -> None:
    torch.manual_seed(0)
    encoder = PoolingUserEncoder(D, attention=AdditiveAttention).eval()
    a = encoder({"history": _left_pad([[3, 9, 27]], 6)}, items)
    b = encoder({"history": _left_pad([[27, 3, 9]], 4)}, items, need_weights=True)
    assert a.vectors.shape == (1, D)
    assert torch.allclose(a.vectors, b.vectors, atol=1e-6)
    weights = b.weights["pooling"]
    assert weights.shape == (1, 1, 1, 4)
    assert weights[0, 0, 0, 0] == 0 and torch.isclose(weights.sum(), torch.tensor(1.0))
    # the pooled vector is the weighted mean of the history's item vectors
    expected = (weights[0, 0, 0, 1:, None] * items(torch.tensor([27, 3, 9]))).sum(0)
    assert torch.allclose(b.vectors[0], expected, atol=1e-6)
    empty = encoder({"history": torch.zeros(1, 4, dtype=torch.long)}, items).vectors
    assert (empty == 0).all()


SCORERS = {
    "dot": lambda: DotScorer(D),
    "cosine": lambda: CosineScorer(D),
    "bilinear": lambda: BilinearScorer(D),
    "mlp": lambda: MLPScorer(D, hidden=(8,)),
}


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorer_shapes_agree(name: str) -> None:
    torch.manual_seed(0)
    scorer = SCORERS[name]()
    users, catalogue = torch.randn(3, D), torch.randn(7, D)
    shared = scorer(users, catalogue)
    assert shared.shape == (3, 7)
    positions = scorer(torch.randn(3, 5, D), catalogue)
    assert positions.shape == (3, 5, 7)
    per_row = scorer(users, catalogue[torch.tensor([[0, 2], [4, 6], [1, 1]])])
    assert per_row.shape == (3, 2)
    # a shared catalogue and per-row candidates score the same pairs the same way
    assert torch.allclose(per_row, shared.gather(1, torch.tensor([[0, 2], [4, 6], [1, 1]])), atol=1e-5)
    if name == "dot":
        assert torch.allclose(shared, users @ catalogue.T)
    if name == "cosine":
        assert shared.abs().max() <= 1 / scorer.temperature + 1e-4
