"""Attention message-passing layers (PyG ``MessagePassing``) for the user–item graph.

Both layers compute their attention in PyG's ``edge_update`` (called through ``edge_updater``),
normalised per destination node with :func:`torch_geometric.utils.softmax` so each node's
weights over its neighbours sum to one, and pass it to ``propagate``, whose ``message`` only
weighs the values. The weights are thus a value of ``forward``, not state left on the module
by ``message``, and both layers can return them (``[E, heads]``, aligned with ``edge_index``)
to explain a recommendation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

Aggregator = Literal["bi-interaction", "residual"]


class BilinearGraphAttention(MessagePassing):
    """The seed article's graph self-attention, per head ``h`` of width ``d = dim / heads``:

    ``alpha_ui = softmax_i(h_u^T W l_i)`` over the neighbours ``i`` of ``u``, and
    ``y_u = h_u + sum_i alpha_ui z_i`` with ``z_i = V l_i``.

    ``W`` starts at zero, so an untrained layer averages its neighbours uniformly (a mean
    aggregator) and learns from there which neighbours matter; ``V`` starts as the identity.
    """

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__(aggr="add", node_dim=0)
        if dim % heads:
            raise ValueError(f"BilinearGraphAttention: dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.weight = nn.Parameter(torch.zeros(heads, self.head_dim, self.head_dim))
        self.value = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.value.weight)
        self.dropout = dropout

    def forward(
        self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        h = x.view(-1, self.heads, self.head_dim)
        query = torch.einsum("nhd,hde->nhe", h, self.weight)  # h_u^T W, per head
        alpha = self.edge_updater(edge_index, query=query, key=h)
        value = self.value(x).view(-1, self.heads, self.head_dim)
        dropped = F.dropout(alpha, p=self.dropout, training=self.training)
        out = self.propagate(edge_index, value=value, alpha=dropped, size=None)
        y = x + out.reshape(-1, self.dim)
        return (y, alpha) if return_attention_weights else y

    def edge_update(self, query_i: Tensor, key_j: Tensor, index: Tensor, ptr: Tensor | None,
                    dim_size: int | None) -> Tensor:  # fmt: skip
        """``alpha_ui`` per edge and head ``[E, heads]``."""
        return softmax((query_i * key_j).sum(-1), index, ptr, dim_size)

    def message(self, value_j: Tensor, alpha: Tensor) -> Tensor:
        return value_j * alpha.unsqueeze(-1)


class KnowledgeGraphAttention(MessagePassing):
    """KGAT's relation-aware attention with its bi-interaction aggregator.

    For an edge ``t -> h`` with relation ``r``: ``pi(h, r, t) = (W e_t)^T tanh(W e_h + e_r)``
    per head, softmax over ``h``'s neighbours; ``e_N = sum_t pi e_t``; output KGAT's
    bi-interaction ``LeakyReLU(W1 (e_h + e_N)) + LeakyReLU(W2 (e_h * e_N))``, or with
    ``aggregator="residual"`` the linear ``e_h + e_N`` (no transform between layers, as in
    LightGCN, which trains faster on small data). One projection ``W`` is shared
    by all relations (KGAT's ``W_r`` per relation costs ``R`` projections of every node); the
    relation enters through its embedding ``e_r``.
    """

    def __init__(
        self, dim: int, num_relations: int, heads: int = 1, dropout: float = 0.0, aggregator: Aggregator = "bi-interaction"
    ) -> None:
        super().__init__(aggr="add", node_dim=0)
        if dim % heads:
            raise ValueError(f"KnowledgeGraphAttention: dim={dim} must be divisible by heads={heads}")
        if aggregator not in ("bi-interaction", "residual"):
            raise ValueError(f"KnowledgeGraphAttention: unknown aggregator {aggregator!r}; choose bi-interaction or residual")
        self.aggregator = aggregator
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.project = nn.Linear(dim, dim, bias=False)
        self.relation = nn.Embedding(num_relations, dim)
        nn.init.normal_(self.relation.weight, std=0.1)
        if aggregator == "bi-interaction":
            self.sum_layer = nn.Linear(dim, dim)
            self.product_layer = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_type: Tensor, return_attention_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        projected = self.project(x)
        alpha = self.edge_updater(edge_index, projected=projected, edge_type=edge_type)
        dropped = F.dropout(alpha, p=self.dropout, training=self.training)
        neighbourhood = self.propagate(edge_index, x=x, alpha=dropped, size=None)
        if self.aggregator == "residual":
            out = x + neighbourhood
        else:
            out = F.leaky_relu(self.sum_layer(x + neighbourhood)) + F.leaky_relu(self.product_layer(x * neighbourhood))
        return (out, alpha) if return_attention_weights else out

    def edge_update(self, projected_i: Tensor, projected_j: Tensor, edge_type: Tensor, index: Tensor,
                    ptr: Tensor | None, dim_size: int | None) -> Tensor:  # fmt: skip
        """``pi(h, r, t)`` per edge and head ``[E, heads]``."""
        shape = (-1, self.heads, self.head_dim)
        relation = self.relation(edge_type)
        scores = (projected_j.view(shape) * torch.tanh(projected_i + relation).view(shape)).sum(-1)
        return softmax(scores, index, ptr, dim_size)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return (x_j.view(-1, self.heads, self.head_dim) * alpha.unsqueeze(-1)).reshape(-1, self.dim)
