"""The training interaction graph as a PyG graph, and its symmetric normalised adjacency.

Users and items share one node index space so that a single homogeneous graph (and a single
embedding table) serves every layer: node ``u`` is user ``u`` (``0..U``, 0 = padding user) and
node ``U + 1 + i`` is item ``i`` (``0..N``, 0 = padding item). Padding nodes are isolated. The
edges come only from ``ItemCatalog.train_edges``, which the data module fills from the training
split: validation and test interactions never enter the graph.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from attnrec.interfaces import ItemCatalog
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import coalesce, to_undirected


@dataclass(frozen=True)
class NodeLayout:
    """Where users, items (and knowledge-graph entities) sit in the node index space."""

    num_users: int
    num_items: int
    num_entities: int = 0

    @property
    def item_offset(self) -> int:
        return self.num_users + 1

    @property
    def entity_offset(self) -> int:
        return self.item_offset + self.num_items + 1

    @property
    def num_nodes(self) -> int:
        return self.entity_offset + (self.num_entities + 1 if self.num_entities else 0)

    def describe(self, node: int) -> tuple[str, int]:
        """``("user" | "item" | "entity", internal id)`` of a node."""
        if node < self.item_offset:
            return "user", node
        if node < self.entity_offset:
            return "item", node - self.item_offset
        return "entity", node - self.entity_offset


def check_catalog(catalog: ItemCatalog, who: str) -> None:
    """Graph models need the training edges that interaction data modules put in the catalog."""
    if catalog.train_edges is None or catalog.num_users <= 0:
        raise ValueError(
            f"{who} needs a catalog with num_users and train_edges [2, E] (the training interactions); "
            "use an interaction data module (InteractionDataModule, SyntheticDataModule or a subclass)"
        )
    edges = catalog.train_edges
    if edges.dim() != 2 or edges.shape[0] != 2:
        raise ValueError(f"{who}: catalog.train_edges must have shape [2, E], got {tuple(edges.shape)}")
    if edges.numel() and (
        int(edges[0].min()) < 1 or int(edges[0].max()) > catalog.num_users
        or int(edges[1].min()) < 1 or int(edges[1].max()) > catalog.num_items
    ):  # fmt: skip
        raise ValueError(
            f"{who}: catalog.train_edges holds ids outside users 1..{catalog.num_users} / items 1..{catalog.num_items}"
        )


def interaction_graph(catalog: ItemCatalog) -> tuple[Tensor, NodeLayout]:
    """Undirected, de-duplicated user–item ``edge_index [2, 2E]`` of the training interactions."""
    check_catalog(catalog, "interaction_graph")
    layout = NodeLayout(catalog.num_users, catalog.num_items)
    users, items = catalog.train_edges.long()
    edge_index = torch.stack([users, items + layout.item_offset])
    return to_undirected(edge_index, num_nodes=layout.num_nodes), layout


def normalized_adjacency(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """``D^-1/2 A D^-1/2`` as ``(edge_index, edge_weight)`` (LightGCN's propagation matrix; no
    self-loops, isolated nodes get no weight)."""
    edge_index = coalesce(edge_index, num_nodes=num_nodes)
    norm_index, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=False)
    return norm_index, weight


def sparse_adjacency(edge_index: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    """A CSR matrix of ``(edge_index, weight)`` laid out as PyG's ``adj_t`` (row = target), so
    LGConv runs one sparse-dense product per layer instead of materialising ``E x D`` messages:
    that keeps graphs of a few million edges in memory on a CPU."""
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), weight, (num_nodes, num_nodes), check_invariants=True)
    with warnings.catch_warnings():  # CSR is "beta" in torch, and the only layout with a fast CPU spmm
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return adj_t.coalesce().to_sparse_csr()
