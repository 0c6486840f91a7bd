"""Attentions keep the contract (no NaN on fully masked rows, weights that explain), trace
without data-dependent branches (``torch.export``), and the graph layers' attention is a
per-node softmax."""

from __future__ import annotations

import functools
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from attnrec.attention import AdditiveAttention, MultiHeadAttention, TargetAttention
from attnrec.encoders import IdItemEncoder, TransformerUserEncoder
from attnrec.interfaces import Attention
from attnrec.testing import check_attention, left_padded_history, tiny_catalog

B, LQ, LK, D = 3, 4, 6, 8

AttentionFactory = Callable[[int], Attention]
BUILT_IN: dict[str, AttentionFactory] = {
    "multihead": functools.partial(MultiHeadAttention, num_heads=2),
    "additive": AdditiveAttention,
    "target-softmax": functools.partial(TargetAttention, hidden=(16,), normalize="softmax"),
    "target-none": functools.partial(TargetAttention, hidden=(16,)),
    "target-sigmoid": functools.partial(TargetAttention, hidden=(16,), normalize="sigmoid"),
}
NAMES = sorted([*BUILT_IN, "alibi"])
SOFTMAX = {"multihead", "additive", "target-softmax", "alibi"}
FUSED = ["multihead", "alibi"]  # attentions with their own fused forward


@pytest.fixture
def factory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], AttentionFactory]:
    """``factory(name)``: a built-in attention, or the example plugin's ALiBi (imported from
    its installed copy, as a third-party plugin would be)."""

    def make(name: str) -> AttentionFactory:
        if name in BUILT_IN:
            return BUILT_IN[name]
        monkeypatch.syspath_prepend(str(request.getfixturevalue("example_plugin")))
        from attnrec_example_plugin import ALiBiAttention

        return functools.partial(ALiBiAttention, num_heads=2)

    return make


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, n, D, generator=gen) for n in (LQ, LK, LK))  # type: ignore[return-value]


def _mask() -> Tensor:
    """[B, 1, LQ, LK]: list 0 has query row 1 fully masked; list 2 masks its first three keys."""
    mask = torch.ones(B, 1, LQ, LK, dtype=torch.bool)
    mask[0, 0, 1] = False
    mask[2, :, :, :3] = False
    return mask


# ------------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", NAMES)
def test_conformance_check_passes(name: str, factory: Callable[[str], AttentionFactory]) -> None:
    check_attention(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_fully_masked_row_gives_zeros_and_masked_keys_get_no_weight(
    name: str, factory: Callable[[str], AttentionFactory]
) -> None:
    torch.manual_seed(0)
    attention = factory(name)(D).eval()
    q, k, v = _inputs()
    mask = _mask()
    values, weights = attention(q, k, v, mask=mask, need_weights=True)
    assert values.shape == (B, LQ, D)
    assert torch.isfinite(values).all()
    assert weights is not None and torch.isfinite(weights).all()
    heads = weights.shape[1]
    assert weights.shape == (B, heads, LQ, LK)
    assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()
    assert (weights[0, :, 1] == 0).all()
    assert (values[0, 1] == 0).all()
    if name in SOFTMAX:
        sums = weights.sum(-1)
        sums[0, :, 1] += 1.0  # the empty row sums to 0
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    # a masked key's value cannot leak into the output
    v2 = v.clone()
    v2[2, :3] += 100.0
    assert torch.allclose(attention(q, k, v2, mask=mask).values, values, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_only_returned_when_asked(name: str, factory: Callable[[str], AttentionFactory]) -> None:
    attention = factory(name)(D).eval()
    q, k, v = _inputs(1)
    assert attention(q, k, v).weights is None
    assert attention(q, k, v, need_weights=True).weights is not None


@pytest.mark.parametrize("name", FUSED)
def test_fused_path_equals_explicit_path(name: str, factory: Callable[[str], AttentionFactory]) -> None:
    torch.manual_seed(0)
    attention = factory(name)(D, dropout=0.3).eval()  # dropout is off in eval mode
    q, k, v = _inputs(2)
    causal = torch.ones(LQ, LK, dtype=torch.bool).tril()
    for mask in (None, _mask(), _mask() & causal, causal):
        fused = attention(q, k, v, mask=mask, need_weights=False)
        explicit = attention(q, k, v, mask=mask, need_weights=True)
        assert fused.weights is None
        assert torch.allclose(fused.values, explicit.values, atol=1e-6)


@pytest.mark.parametrize("name", FUSED)
def test_per_head_masks_fused_equals_explicit(name: str, factory: Callable[[str], AttentionFactory]) -> None:
    """A row empty in one head only: that head contributes nothing on both paths."""
    torch.manual_seed(0)
    attention = factory(name)(D).eval()
    q, k, v = _inputs(5)
    mask = torch.ones(B, 2, LQ, LK, dtype=torch.bool)
    mask[0, 1, 2] = False
    mask[1, 0, :, 4:] = False
    fused = attention(q, k, v, mask=mask).values
    explicit = attention(q, k, v, mask=mask, need_weights=True)
    assert torch.allclose(fused, explicit.values, atol=1e-6)
    assert (explicit.weights[0, 1, 2] == 0).all()
    assert (explicit.weights[0, 0, 2] != 0).all() and (fused[0, 2] != 0).any()  # the other head still attends


@pytest.mark.parametrize("name", FUSED)
def test_no_nan_gradients_through_a_fully_masked_row(name: str, factory: Callable[[str], AttentionFactory]) -> None:
    attention = factory(name)(D)
    q, k, v = (x.requires_grad_() for x in _inputs(3))
    mask = torch.zeros(B, 1, 1, LK, dtype=torch.bool)
    mask[1:, ..., 2:] = True
    for need_weights in (False, True):
        attention.zero_grad()
        attention(q, k, v, mask=mask, need_weights=need_weights).values.sum().backward()
        assert all(torch.isfinite(x.grad).all() for x in (q, k, v))
        assert all(torch.isfinite(p.grad).all() for p in attention.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_key_padding_mask_broadcasts(name: str, factory: Callable[[str], AttentionFactory]) -> None:
    torch.manual_seed(0)
    attention = factory(name)(D).eval()
    q, k, v = _inputs(4)
    keys = torch.ones(B, LK, dtype=torch.bool)
    keys[0, :2] = False
    keys[1, :] = False  # every row of list 1 is empty
    short = attention(q, k, v, mask=keys[:, None, None, :], need_weights=True)
    full = attention(q, k, v, mask=keys[:, None, None, :].expand(B, 1, LQ, LK), need_weights=True)
    assert torch.allclose(short.values, full.values, atol=1e-6)
    assert torch.allclose(short.weights, full.weights, atol=1e-6)
    assert torch.isfinite(short.values).all()
    assert (short.weights[1] == 0).all()
    assert (short.weights[0, ..., :2] == 0).all()


def test_multihead_rejects_indivisible_width() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(10, num_heads=3)


def test_target_attention_without_normalisation_keeps_intensity() -> None:
    """DIN's raw weights: doubling the number of identical behaviours doubles the pooled vector."""
    torch.manual_seed(0)
    attention = TargetAttention(D, hidden=(16,)).eval()
    item = torch.randn(1, 1, D)
    target = torch.randn(1, 1, D)
    one = attention(target, item.expand(1, 2, D), item.expand(1, 2, D), mask=torch.tensor([[[[True, False]]]])).values
    two = attention(target, item.expand(1, 2, D), item.expand(1, 2, D)).values
    assert torch.allclose(two, 2 * one, atol=1e-6)


def test_alibi_logits_are_scaled_dot_products_plus_the_recency_bias(factory: Callable[[str], AttentionFactory]) -> None:
    torch.manual_seed(0)
    attention = factory("alibi")(D).eval()
    q, k, _ = _inputs(6)
    query = attention.q_proj(q).view(B, LQ, 2, D // 2).transpose(1, 2)  # [B, H, Lq, D / H]
    key = attention.k_proj(k).view(B, LK, 2, D // 2).transpose(1, 2)
    expected = query @ key.transpose(-2, -1) / (D // 2) ** 0.5
    distance = (torch.arange(LK - LQ, LK)[:, None] - torch.arange(LK)[None, :]).abs()
    expected = expected - torch.tensor([2.0**-4, 2.0**-8])[:, None, None] * distance  # slopes 2^(-8h/H), H = 2
    torch.testing.assert_close(attention.logits(q, k), expected)


# ------------------------------------------------------------ branch-free tracing
class _Attend(nn.Module):
    """An attention as a module of plain tensors, for ``torch.export``."""

    def __init__(self, attention: Attention, need_weights: bool) -> None:
        super().__init__()
        self.attention, self.need_weights = attention, need_weights

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        values, weights = self.attention(query, key, value, mask=mask, need_weights=self.need_weights)
        return (values,) if weights is None else (values, weights)


@pytest.mark.parametrize("need_weights", [False, True], ids=["fast", "weights"])
@pytest.mark.parametrize("name", NAMES)
def test_attention_exports_without_specialising_on_the_mask(
    name: str, need_weights: bool, factory: Callable[[str], AttentionFactory]
) -> None:
    """Exported with an empty query row, the program must still be right for masks with none
    and with nothing but empty rows: a data-dependent branch would fail export or bake one in."""
    torch.manual_seed(0)
    module = _Attend(factory(name)(D).eval(), need_weights)
    q, k, v = _inputs(7)
    program = torch.export.export(module, (q, k, v, _mask()))
    for mask in (_mask(), torch.ones(B, 1, LQ, LK, dtype=torch.bool), torch.zeros(B, 1, LQ, LK, dtype=torch.bool)):
        exported, eager = program.module()(q, k, v, mask), module(q, k, v, mask)
        assert len(exported) == len(eager) == 1 + need_weights
        for got, expected in zip(exported, eager):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (program.module()(q, k, v, torch.zeros(B, 1, LQ, LK, dtype=torch.bool))[0] == 0).all()


class _Users(nn.Module):
    """A left-padded history ``[B, L]`` -> user vectors ``[B, D]``, as a served model runs."""

    def __init__(self, attention: AttentionFactory) -> None:
        super().__init__()
        self.items = IdItemEncoder(tiny_catalog(), 16, init_std=0.5)
        self.users = TransformerUserEncoder(16, num_layers=2, max_len=8, attention=attention)

    def forward(self, history: Tensor) -> Tensor:
        return self.users({"history": history}, self.items).vectors


@pytest.mark.parametrize("name", FUSED)
def test_transformer_user_encoder_exports_and_matches_eager(
    name: str, factory: Callable[[str], AttentionFactory]
) -> None:
    torch.manual_seed(0)
    module = _Users(factory(name)).eval()
    history = left_padded_history(batch=4, length=8)
    history[1] = 0  # a user with no history at all
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (history,), dynamic_shapes={"history": {0: batch}})
    exported = program.module()
    torch.testing.assert_close(exported(history), module(history), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(exported(history)).all()
    other = left_padded_history(batch=7, length=8, seed=3)  # another batch size and padding
    other[[0, 5]] = 0
    torch.testing.assert_close(exported(other), module(other), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- graph layers
def _graph(num_nodes: int = 7, num_edges: int = 24, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random ``x [N, D]`` and ``edge_index [2, E]`` with a repeated edge and node 6 without
    neighbours (it receives no edge)."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes - 1, (2, num_edges), generator=gen)
    edge_index[:, -1] = edge_index[:, 0]
    return torch.randn(num_nodes, D, generator=gen), edge_index


def _per_node_softmax(scores: Tensor, target: Tensor, num_nodes: int) -> Tensor:
    """Softmax of ``scores [E, H]`` over each target node's incoming edges, node by node."""
    alpha = torch.zeros_like(scores)
    for node in range(num_nodes):
        incoming = target == node
        if incoming.any():
            alpha[incoming] = scores[incoming].softmax(dim=0)
    return alpha


def _assert_softmax_per_node(alpha: Tensor, target: Tensor, num_nodes: int) -> None:
    sums = torch.zeros(num_nodes, alpha.shape[1]).index_add_(0, target, alpha)
    has_neighbours = torch.zeros(num_nodes, dtype=torch.bool)
    has_neighbours[target] = True
    torch.testing.assert_close(sums[has_neighbours], torch.ones_like(sums[has_neighbours]))
    assert (sums[~has_neighbours] == 0).all() and not has_neighbours.all()


@pytest.mark.parametrize("heads", [1, 2])
def test_bilinear_graph_attention_is_a_per_node_softmax_matching_an_explicit_computation(heads: int) -> None:
    layers = pytest.importorskip("attnrec_graph.layers")
    torch.manual_seed(0)
    layer = layers.BilinearGraphAttention(D, heads=heads).eval()
    with torch.no_grad():
        layer.weight.normal_()  # W starts at zero (uniform weights): make the scores differ
        layer.value.weight.normal_()
    x, edge_index = _graph()
    source, target = edge_index
    y, alpha = layer(x, edge_index, return_attention_weights=True)
    _assert_softmax_per_node(alpha, target, len(x))
    h = x.view(len(x), heads, -1)
    scores = torch.einsum("ehd,hdf,ehf->eh", h[target], layer.weight, h[source])  # h_u^T W l_i per head
    expected_alpha = _per_node_softmax(scores, target, len(x))
    torch.testing.assert_close(alpha, expected_alpha)
    values = (x @ layer.value.weight.T).view(len(x), heads, -1)
    messages = (expected_alpha.unsqueeze(-1) * values[source]).reshape(-1, D)
    expected_y = x + torch.zeros_like(x).index_add_(0, target, messages)  # y_u = h_u + sum alpha z_i
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(layer(x, edge_index), y)


@pytest.mark.parametrize("aggregator", ["residual", "bi-interaction"])
def test_kg_attention_is_a_per_node_softmax_matching_an_explicit_computation(aggregator: str) -> None:
    layers = pytest.importorskip("attnrec_graph.layers")
    torch.manual_seed(0)
    heads = 2
    layer = layers.KnowledgeGraphAttention(D, num_relations=3, heads=heads, aggregator=aggregator).eval()
    x, edge_index = _graph(seed=1)
    edge_type = torch.randint(0, 3, (edge_index.shape[1],), generator=torch.Generator().manual_seed(2))
    source, target = edge_index
    out, alpha = layer(x, edge_index, edge_type, return_attention_weights=True)
    _assert_softmax_per_node(alpha, target, len(x))
    projected = layer.project(x)
    gate = torch.tanh(projected[target] + layer.relation(edge_type))  # tanh(W e_h + e_r)
    scores = (projected[source] * gate).view(-1, heads, D // heads).sum(-1)  # (W e_t)^T tanh(...) per head
    expected_alpha = _per_node_softmax(scores, target, len(x))
    torch.testing.assert_close(alpha, expected_alpha)
    messages = (expected_alpha.unsqueeze(-1) * x[source].view(-1, heads, D // heads)).reshape(-1, D)
    neighbourhood = torch.zeros_like(x).index_add_(0, target, messages)
    if aggregator == "residual":
        expected = x + neighbourhood
    else:
        leaky = torch.nn.functional.leaky_relu
        expected = leaky(layer.sum_layer(x + neighbourhood)) + leaky(layer.product_layer(x * neighbourhood))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(layer(x, edge_index, edge_type), out)


@pytest.mark.parametrize("kind", ["bilinear", "kg"])
def test_graph_attention_weights_are_returned_before_dropout(kind: str) -> None:
    """Dropout thins the messages in training; the explanation stays the softmax."""
    layers = pytest.importorskip("attnrec_graph.layers")
    torch.manual_seed(0)
    x, edge_index = _graph(seed=3)
    if kind == "bilinear":
        layer = layers.BilinearGraphAttention(D, heads=2, dropout=0.5)
        args: tuple[Tensor, ...] = (x, edge_index)
    else:
        layer = layers.KnowledgeGraphAttention(D, num_relations=1, heads=2, dropout=0.5, aggregator="residual")
        args = (x, edge_index, torch.zeros(edge_index.shape[1], dtype=torch.long))
    y, alpha = layer.train()(*args, return_attention_weights=True)
    _assert_softmax_per_node(alpha, edge_index[1], len(x))
    assert not torch.allclose(y, layer.eval()(*args), atol=1e-4)  # dropout did act on the messages
