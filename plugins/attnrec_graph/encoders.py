"""Graph encoders: propagate user and item embeddings over the training graph.

A graph encoder is the model's ``ItemEncoder`` and also holds the per-user embeddings,
because propagation couples the two: :meth:`GraphEncoder.propagate` returns both tables and
:class:`GraphUserEncoder` reads a batch's ``user`` rows from it. One propagation serves both
sides: its result is kept until a parameter changes (an optimiser step), grad mode or train/eval
mode flips, or :meth:`GraphEncoder.clear` is called, so a training step propagates once and an
evaluation pass once (the item vectors then come from the core's inference cache,
:meth:`attnrec.interfaces.ItemEncoder.vectors`; this keeps the user side of the same pass).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal, NamedTuple

import torch
from attnrec.interfaces import Batch, ItemCatalog, ItemEncoder, UserEncoder, UserEncoding
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, LGConv

from .graph import NodeLayout, interaction_graph, normalized_adjacency, sparse_adjacency
from .kg import knowledge_graph
from .layers import Aggregator, BilinearGraphAttention, KnowledgeGraphAttention


class Propagated(NamedTuple):
    users: Tensor  # [U + 1, D]
    items: Tensor  # [N + 1, D]


class EdgeAttention(NamedTuple):
    edge_index: Tensor  # [2, E] node ids (see NodeLayout), source -> target
    weights: Tensor  # [layers, E, heads]; each target's weights over its sources sum to 1


class GraphEncoder(ItemEncoder):
    """Base of the graph encoders: one embedding row per node, a cached :meth:`propagate`.

    Subclasses implement :meth:`node_vectors` (final node vectors; public, so other plugins
    extend it, as the social plugin does) and :meth:`edge_attention`.
    """

    required_features: tuple[str, ...] = ("train_edges",)

    def __init__(self, catalog: ItemCatalog, dim: int, num_layers: int = 3, init_std: float = 0.1) -> None:
        super().__init__(catalog, dim)
        edge_index, layout = self._graph(catalog)
        self.layout = layout
        self.num_layers = num_layers
        self.embedding = nn.Embedding(layout.num_nodes, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)
        # rebuilt from the catalog on load (the catalog travels in the checkpoint)
        self.register_buffer("edge_index", edge_index, persistent=False)
        self._cache: tuple[tuple, Propagated] | None = None

    def _graph(self, catalog: ItemCatalog) -> tuple[Tensor, NodeLayout]:
        return interaction_graph(catalog)

    @abstractmethod
    def node_vectors(self, x: Tensor) -> Tensor:
        """Final vectors of every node from the ego embeddings ``x [num_nodes, D]``."""

    @abstractmethod
    def edge_attention(self) -> EdgeAttention:
        """How much each neighbour contributed to each node, per layer and head."""

    def propagate(self) -> Propagated:
        # parameters' version counters move with every in-place update (optimiser steps, loads);
        # their storage with every replacement (load_state_dict(assign=True), device moves)
        key = (self.training, torch.is_grad_enabled(), tuple((p.data_ptr(), p._version) for p in self.parameters()))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        nodes = self.node_vectors(self.embedding.weight)
        lo, hi = self.layout.item_offset, self.layout.entity_offset
        users, items = nodes[:lo].clone(), nodes[lo:hi].clone()
        users[0] = 0.0  # padding rows
        items[0] = 0.0
        result = Propagated(users, items)
        self._cache = (key, result)
        return result

    def clear(self) -> None:
        """Forget the cached propagation (a new training step starts)."""
        self._cache = None

    def forward(self, items: Tensor) -> Tensor:
        return self.propagate().items[items]

    def all_items(self) -> Tensor:
        return self.propagate().items

    def users(self, users: Tensor) -> Tensor:
        return self.propagate().users[users]

    def ego(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Layer-0 embeddings (what LightGCN's L2 regulariser penalises)."""
        return self.embedding(users), self.embedding(items + self.layout.item_offset)


def layer_mean(layers: list[Tensor]) -> Tensor:
    return torch.stack(layers).mean(0)


class LightGCNEncoder(GraphEncoder):
    """LightGCN (He et al., 2020): ``E^(k+1) = D^-1/2 A D^-1/2 E^(k)`` with PyG's ``LGConv``,
    no transforms or non-linearities, final vectors the mean of layers ``0..K``."""

    def __init__(self, catalog: ItemCatalog, dim: int, num_layers: int = 3, init_std: float = 0.1) -> None:
        super().__init__(catalog, dim, num_layers, init_std)
        num_nodes = self.layout.num_nodes
        index, weight = normalized_adjacency(self.edge_index, num_nodes)
        self.register_buffer("norm_weight", weight, persistent=False)
        self.register_buffer("norm_index", index, persistent=False)
        self.register_buffer("adj_t", sparse_adjacency(index, weight, num_nodes), persistent=False)
        self.conv = LGConv(normalize=False)

    def node_vectors(self, x: Tensor) -> Tensor:
        layers = [x]
        for _ in range(self.num_layers):
            layers.append(self.conv(layers[-1], self.adj_t))
        return layer_mean(layers)

    def edge_attention(self) -> EdgeAttention:
        """LightGCN has no attention: its fixed weights are the symmetric normalisation
        ``1 / sqrt(d_u d_i)`` (they do not sum to one; reported for comparison)."""
        weights = self.norm_weight.view(1, -1, 1).expand(self.num_layers, -1, 1)
        return EdgeAttention(self.norm_index, weights)


class AttentionGraphEncoder(GraphEncoder):
    """Base of the attention encoders: ``self.convs`` attention layers, final vectors the mean
    of the layer outputs; subclasses say how one layer is called (:meth:`_conv`)."""

    convs: nn.ModuleList

    @abstractmethod
    def _conv(self, conv: nn.Module, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """One layer's output and, when asked, its per-edge weights ``[E, heads]``."""

    def _layers(self, x: Tensor, need_weights: bool) -> tuple[list[Tensor], list[Tensor]]:
        layers, weights = [x], []
        for conv in self.convs:
            out, attention = self._conv(conv, layers[-1], need_weights)
            layers.append(out)
            if attention is not None:
                weights.append(attention)
        return layers, weights

    def node_vectors(self, x: Tensor) -> Tensor:
        return layer_mean(self._layers(x, need_weights=False)[0])

    @torch.no_grad()
    def edge_attention(self) -> EdgeAttention:
        _, weights = self._layers(self.embedding.weight, need_weights=True)
        return EdgeAttention(self.edge_index, torch.stack(weights))


AttentionKind = Literal["gatv2", "gat", "bilinear"]


class GraphAttentionEncoder(AttentionGraphEncoder):
    """Multi-layer, multi-head attention over the user–item graph; final vectors the mean of
    the layer outputs (LightGCN's layer combination, which keeps shallow signal).

    ``attention``: ``gatv2`` (PyG ``GATv2Conv``, dynamic attention), ``gat`` (``GATConv``) or
    ``bilinear`` (the seed's ``softmax_i(h_u^T W l_i)``, :class:`BilinearGraphAttention`).
    GAT layers concatenate ``heads`` outputs of width ``dim / heads`` and add a residual.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int,
        num_layers: int = 2,
        heads: int = 2,
        attention: AttentionKind = "bilinear",
        dropout: float = 0.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(catalog, dim, num_layers, init_std)
        if dim % heads:
            raise ValueError(f"GraphAttentionEncoder: dim={dim} must be divisible by heads={heads}")
        kinds = {"gatv2": GATv2Conv, "gat": GATConv}
        self.attention = attention
        if attention == "bilinear":
            self.convs = nn.ModuleList(BilinearGraphAttention(dim, heads, dropout) for _ in range(num_layers))
        elif attention in kinds:
            self.convs = nn.ModuleList(
                kinds[attention](dim, dim // heads, heads=heads, dropout=dropout, add_self_loops=False, bias=False,
                                 residual=True)
                for _ in range(num_layers)
            )  # fmt: skip
        else:
            raise ValueError(f"GraphAttentionEncoder: unknown attention {attention!r}; choose gatv2, gat or bilinear")

    def _conv(self, conv: nn.Module, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        if not need_weights:
            return conv(x, self.edge_index), None
        out, attention = conv(x, self.edge_index, return_attention_weights=True)
        return out, attention[1] if isinstance(attention, tuple) else attention


class KGAttentionEncoder(AttentionGraphEncoder):
    """KGAT-style attention over the collaborative knowledge graph: users, items and the
    catalog's knowledge-graph entities (features ``kg_entity``/``kg_relation``, see
    :mod:`attnrec_graph.kg`), with :class:`KnowledgeGraphAttention` layers (``aggregator``:
    the transform-free ``residual`` by default, which learns several times faster on small
    data, or KGAT's ``bi-interaction``); final vectors the mean of
    the layer outputs."""

    required_features = ("train_edges", "kg_entity", "kg_relation")

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int,
        num_layers: int = 2,
        heads: int = 2,
        aggregator: Aggregator = "residual",
        dropout: float = 0.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(catalog, dim, num_layers, init_std)
        self.register_buffer("edge_type", self._edge_type, persistent=False)
        del self._edge_type
        self.convs = nn.ModuleList(
            KnowledgeGraphAttention(dim, self._num_relations, heads, dropout, aggregator) for _ in range(num_layers)
        )

    def _graph(self, catalog: ItemCatalog) -> tuple[Tensor, NodeLayout]:
        edge_index, edge_type, layout, num_relations = knowledge_graph(catalog)
        self._edge_type, self._num_relations = edge_type, num_relations
        return edge_index, layout

    def _conv(self, conv: nn.Module, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        if not need_weights:
            return conv(x, self.edge_index, self.edge_type), None
        return conv(x, self.edge_index, self.edge_type, return_attention_weights=True)


class GraphUserEncoder(UserEncoder):
    """Per-user vectors from the graph encoder, read by ``batch["user"]`` (the history is
    already in the graph). Returns one vector per history position in training, so every
    target of a training window is a positive."""

    all_positions = True
    item_encoders = ("GraphAttentionEncoder", "LightGCNEncoder", "KGAttentionEncoder")

    def __init__(self, dim: int) -> None:
        super().__init__(dim)

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        if not isinstance(item_encoder, GraphEncoder):
            raise TypeError(
                f"GraphUserEncoder reads users from a graph item encoder (LightGCNEncoder, GraphAttentionEncoder, "
                f"KGAttentionEncoder), got {type(item_encoder).__name__}"
            )
        if "user" not in batch:
            raise KeyError("graph models score users by their internal id: the batch needs 'user' [B]")
        users = item_encoder.users(batch["user"])
        if all_positions:
            users = users.unsqueeze(1).expand(-1, batch["history"].shape[1], -1)
        return UserEncoding(users, None)
