"""Social attention on top of LightGCN propagation, as a graph item encoder.

In the spirit of SocialLGN (Liao et al., 2022) and DiffNet++ (Wu et al., 2020), with GraphRec's
two attentions (Fan et al., WWW 2019):

* **item space** — LightGCN over the training user–artist graph (PyG ``LGConv`` layers of the
  graph plugin's :class:`~attnrec_graph.encoders.LightGCNEncoder`, final vectors the mean of
  layers ``0..K``: ``e_u``, ``z_a``), plus one attention over a listener's artists:
  ``h^I_u = e_u + c sum_a alpha_ua z_a`` with ``alpha_ua = softmax_a(e_u^T W z_a)``;
* **social space** — attention over the friends' item-space vectors (friend -> user):
  ``h^S_u = sum_o beta_uo h^I_o``, ``beta_uo = softmax_o(h^I_u^T W' h^I_o)``;
* **fusion** — ``h_u = h^I_u + c h^S_u``; artists keep LightGCN's ``z_a``; scores ``h_u . z_i``.

``c = 1 / (K + 1)``: the attended artists and the attended friends each weigh like one of
LightGCN's ``K + 1`` layers in its mean. Both attentions are the graph plugin's
:class:`~attnrec_graph.layers.BilinearGraphAttention` (PyG message passing; each node's weights
over its neighbours sum to one; ``W``, ``W'`` start at zero, so an untrained attention is a
mean) with their value maps held at the identity: the attentions choose *which* artists and
friends count, never *how much* in total.

Why this shape. The first version of this plugin (one GraphRec-style attention hop in item
space, one social hop, a learned fusion started at the identity) lost to LightGCN on Last.fm
under the same budget, overall and on cold users (Recall@20 0.160 against 0.269; see
``benchmarks/results/social.md``): one hop cannot see the user–artist–user paths that
LightGCN's three layers smooth over, and that collaborative signal dominates Last.fm. So the
item space here *is* LightGCN, and the attentions add to it with a fixed weight. Every learned
*magnitude* tried on top of LightGCN lost to it on Last.fm (150 epochs, 199 cold users;
paired Recall@20 differences): learned ``D x D`` fusion matrices and value maps started at
zero / the identity -0.077, per-dimension gates started at zero -0.041 (friends only -0.055,
artists only -0.034), the same gates with the value maps held at the identity -0.013; the
fixed ``c`` with identity values: +0.002 ± 0.004. Our reading, not checked by inspecting the
trained scales: they are free parameters outside LightGCN's L2 penalty, Adam moves each by
about the learning rate per step, and over the 2,250 steps the attended artists and friends
swamp the listener's own vector (an artist term also sees each training positive in the
listener's own aggregation, a path to memorise it).

The fusion is linear and the friends enter only through ``c h^S_u``, so each friend's share of
a score is exact (:meth:`SocialAttentionEncoder.friend_attention`) and the user's own part is
``h^I_u . z_i`` (:meth:`SocialAttentionEncoder.own_part`). Listen counts weigh the loss
instead of entering as GraphRec's opinion embeddings, and scores are dot products instead of
GraphRec's MLP over each user–item pair (which cannot rank a catalogue in one matrix product).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from attnrec.interfaces import ItemCatalog
from torch import Tensor

from attnrec_graph.encoders import EdgeAttention, LightGCNEncoder
from attnrec_graph.layers import BilinearGraphAttention


class FriendAttention(NamedTuple):
    friends: Tensor  # [F] internal user ids of the user's friends
    weights: Tensor  # [F] attention, mean over heads; sums to 1 when F > 0
    contributions: Tensor | None  # [F] each friend's exact share of the item's score


class SocialAttentionEncoder(LightGCNEncoder):
    """LightGCN (``num_layers`` LGConv layers, mean of layers) plus item-space attention over a
    listener's artists and social attention over their friends (``heads`` heads each), each
    added with the weight of one LightGCN layer (``mix = 1 / (num_layers + 1)``); see the module
    docstring.

    The social network comes from the catalog's ``social_edges`` (a
    :class:`~attnrec_social.data.SocialCatalog`); with a plain catalog the graph starts empty
    (every user friendless: ``h_u = h^I_u``) until :meth:`set_social_graph` gives one, which the
    model does when it loads a checkpoint. The edges are a persistent buffer, so checkpoints
    carry them.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int,
        num_layers: int = 3,
        heads: int = 2,
        dropout: float = 0.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(catalog, dim, num_layers, init_std)
        if dim % heads:
            raise ValueError(f"SocialAttentionEncoder: dim={dim} must be divisible by heads={heads}")
        # the item-space attention runs on the artist -> listener half of the graph only: the
        # artists' vectors stay LightGCN's, so attention on the other half would explain nothing
        self.register_buffer("listen_index", self.edge_index[:, self.edge_index[1] < self.layout.item_offset], persistent=False)
        edges = getattr(catalog, "social_edges", None)
        self.register_buffer("social_index", edges if edges is not None else torch.zeros(2, 0, dtype=torch.long))
        self.listening = BilinearGraphAttention(dim, heads, dropout)
        self.social = BilinearGraphAttention(dim, heads, dropout)
        for layer in (self.listening, self.social):  # values stay the identity: attention picks, c scales
            layer.value.weight.requires_grad_(False)
        self.mix = 1.0 / (num_layers + 1)  # c

    def set_social_graph(self, edge_index: Tensor) -> None:
        """Replace the social network (``[2, E]`` internal user ids, friend -> user)."""
        if edge_index.numel() and int(edge_index.max()) > self.layout.num_users:
            raise ValueError(f"social graph names users beyond 1..{self.layout.num_users}")
        self.social_index = edge_index.to(self.embedding.weight.device, torch.long)
        self.clear()

    def _item_space(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(h^I [U + 1, D], every node's LightGCN vector, the listening attention [E, heads]
        over listen_index or None)``."""
        nodes = super().node_vectors(x)
        users = nodes[: self.layout.item_offset]
        if need_weights:
            out, alpha = self.listening(nodes, self.listen_index, return_attention_weights=True)
        else:
            out, alpha = self.listening(nodes, self.listen_index), None
        attended = (out - nodes)[: self.layout.item_offset]  # sum_a alpha_ua V z_a (0 for items)
        return users + self.mix * attended, nodes, alpha

    def _social_space(self, users: Tensor) -> Tensor:
        """``h^S`` for every user: the attended sum of the friends' values (0 without friends)."""
        return self.social(users, self.social_index) - users

    def node_vectors(self, x: Tensor) -> Tensor:
        users, nodes, _ = self._item_space(x)
        fused = users + self.mix * self._social_space(users)
        return torch.cat([fused, nodes[self.layout.item_offset :]])

    @torch.no_grad()
    def edge_attention(self) -> EdgeAttention:
        """The item-space attention of each listener over the artists they played
        (``weights [1, E, heads]`` over the artist -> user edges; artists have no attention:
        their vectors are LightGCN's)."""
        _, _, alpha = self._item_space(self.embedding.weight, need_weights=True)
        assert alpha is not None
        return EdgeAttention(self.listen_index, alpha.unsqueeze(0))

    @torch.no_grad()
    def friend_attention(self, user: int, item: int | None = None) -> FriendAttention:
        """The social attention of internal ``user`` over their friends (mean over heads, which
        sums to one) and, given an ``item``, each friend's exact share of that item's score:
        ``c sum_h beta_uoh (h^I_o)_h . (z_item)_h`` over the heads' slices of the vectors. The shares plus the user's own part
        (:meth:`own_part`) add up to the score."""
        users, _, _ = self._item_space(self.embedding.weight)
        _, alpha = self.social(users, self.social_index, return_attention_weights=True)
        incoming = (self.social_index[1] == user).nonzero().flatten()
        friends = self.social_index[0, incoming]
        weights = alpha[incoming]  # [F, heads]
        contributions = None
        if item is not None:
            heads, head_dim = self.social.heads, self.social.head_dim
            values = self.social.value(users[friends]).view(-1, heads, head_dim)
            messages = (values * weights.unsqueeze(-1)).reshape(len(friends), -1)  # [F, D]
            contributions = self.mix * messages @ self.all_items()[item]
        return FriendAttention(friends, weights.mean(-1), contributions)

    @torch.no_grad()
    def own_part(self, user: int, item: int) -> float:
        """``h^I_u . z_item``: what the user's own listening gives the item's score."""
        users, _, _ = self._item_space(self.embedding.weight)
        return float(users[user] @ self.all_items()[item])
