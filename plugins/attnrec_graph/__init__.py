"""attnrec's graph plugin: the user–item interaction graph, LightGCN, graph attention (GATv2,
GAT and the seed's bilinear graph self-attention) and KGAT-style knowledge-graph attention.

Everything registers through the hooks below; see ``docs/graph.md``.
"""

from __future__ import annotations

from attnrec import hookimpl
from attnrec.hookspecs import Register


@hookimpl
def register_data(register: Register) -> None:
    from .data import KGDataModule, LightGCNFilesDataModule, SyntheticKGDataModule

    for cls in (KGDataModule, SyntheticKGDataModule, LightGCNFilesDataModule):
        register(cls)


@hookimpl
def register_encoders(register: Register) -> None:
    from .encoders import GraphAttentionEncoder, GraphUserEncoder, KGAttentionEncoder, LightGCNEncoder

    for cls in (LightGCNEncoder, GraphAttentionEncoder, KGAttentionEncoder, GraphUserEncoder):
        register(cls)


@hookimpl
def register_recommenders(register: Register) -> None:
    from .model import GraphRecommender

    register(GraphRecommender)
