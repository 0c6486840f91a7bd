"""Social attention on top of LightGCN propagation, as a graph item encoder.

In the spirit of SocialLGN (Liao et al., 2022) and DiffNet++ (Wu et al., 2020), with GraphRec's
two attentions (Fan et al., WWW 2019):

* **item space** — LightGCN over the training user–artist graph (PyG ``LGConv`` layers of the
  graph plugin's :class:`~attnrec_graph.encoders.LightGCNEncoder`, final vectors the mean of
  layers ``0..K``: ``e_u``, ``z_a``) with SocialLGN's per-layer **social diffusion** (a user
  with friends takes ``1 - b_u`` of the layer's user–artist aggregation and ``b_u`` of the mean
  of their friends' previous-layer vectors, ``b_u = w_u b``, ``b = diffusion`` = 0.25), plus one
  attention over a listener's artists:
  ``h^I_u = e_u + w_u c sum_a alpha_ua z_a`` with ``alpha_ua = softmax_a(e_u^T W z_a)``;
* **social space** — attention over the friends' item-space vectors (friend -> user):
  ``h^S_u = sum_o beta_uo h^I_o``, ``beta_uo = softmax_o(h^I_u^T W' h^I_o)``;
* **fusion** — ``h_u = h^I_u + w_u c h^S_u``; artists keep the propagation's ``z_a``; scores ``h_u . z_i``.

``c = 1 / (K + 1)``: the attended artists and the attended friends each weigh like one of
LightGCN's ``K + 1`` layers in its mean, for a user with ``a = anchor_artists`` (5) training
artists. ``w_u = 2a / (a + n_u)`` scales the three social terms by how little the user's own
listening says: 1 at five artists, up to 2 with none, 0.18 at fifty. Both attentions are the
graph plugin's :class:`~attnrec_graph.layers.BilinearGraphAttention` (PyG message passing;
each node's weights over its neighbours sum to one; ``W``, ``W'`` start at zero, so an
untrained attention is a mean) with their value maps held at the identity: the attentions
choose *which* artists and friends count, never *how much* in total.

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

Why the diffusion and ``w_u``. With the attentions alone the model was level with LightGCN on
Last.fm's cold users (paired cold Recall@20 +0.009 ± 0.010, 199 cold users) and lost overall on
the published split (NDCG@20 -0.007 ± 0.002): a listener with five artists gets little from
attending over friends once, at the end, and heavy listeners lose a little to the added terms
(the artist attention alone cost -0.005 ± 0.002 there). Diffusing through the friends at every
layer lets their listening shape a cold user's vector through LightGCN's smoothing; scaling the
social terms by ``w_u`` keeps them for the users who need them. The variants tried (one seed
each, chosen on the same test figures) are in ``docs/social.md``.

The fusion after propagation is linear and the attended friends enter only through
``w_u c h^S_u``, so each attended friend's share of a score is exact
(:meth:`SocialAttentionEncoder.friend_attention`) and the rest is ``h^I_u . z_i``
(:meth:`SocialAttentionEncoder.own_part`; with diffusion, ``h^I_u`` already carries the
friends' listening smoothed through the layers). Listen counts weigh the loss
instead of entering as GraphRec's opinion embeddings, and scores are dot products instead of
GraphRec's MLP over each user–item pair (which cannot rank a catalogue in one matrix product).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from attnrec.interfaces import ItemCatalog
from torch import Tensor

from attnrec_graph.encoders import EdgeAttention, LightGCNEncoder, layer_mean
from attnrec_graph.graph import sparse_adjacency
from attnrec_graph.layers import BilinearGraphAttention

from .social import degrees


class FriendAttention(NamedTuple):
    friends: Tensor  # [F] internal user ids of the user's friends
    weights: Tensor  # [F] attention, mean over heads; sums to 1 when F > 0
    contributions: Tensor | None  # [F] each friend's exact share of the item's score


class SocialAttentionEncoder(LightGCNEncoder):
    """LightGCN (``num_layers`` LGConv layers, mean of layers) with social diffusion
    (``diffusion``: the friends' share of a user's vector at each layer; 0 turns it off), plus
    item-space attention over a listener's artists and social attention over their friends
    (``heads`` heads each), each added with the weight of one LightGCN layer
    (``mix = 1 / (num_layers + 1)``). All three terms are scaled per user by
    ``w_u = 2 a / (a + n_u)`` for a user with ``n_u`` training artists (``a`` =
    ``anchor_artists``; ``None``: ``w_u = 1``): a user with ``a`` artists gets them as given,
    colder users more, heavy listeners less; see the module docstring.

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
        diffusion: float = 0.25,
        anchor_artists: int | None = 5,
    ) -> None:
        super().__init__(catalog, dim, num_layers, init_std)
        if dim % heads:
            raise ValueError(f"SocialAttentionEncoder: dim={dim} must be divisible by heads={heads}")
        if not 0.0 <= diffusion <= 1.0:
            raise ValueError(f"SocialAttentionEncoder: diffusion={diffusion} must be in [0, 1] (0 turns it off)")
        if anchor_artists is not None and anchor_artists < 1:
            raise ValueError(f"SocialAttentionEncoder: anchor_artists={anchor_artists} must be >= 1 (None: no scaling)")
        self.diffusion = diffusion
        # the item-space attention runs on the artist -> listener half of the graph only: the
        # artists' vectors stay the propagation's, so attention on the other half would explain nothing
        self.register_buffer("listen_index", self.edge_index[:, self.edge_index[1] < self.layout.item_offset], persistent=False)
        listened = torch.bincount(self.listen_index[1], minlength=self.layout.item_offset).float().unsqueeze(1)
        scale = torch.ones_like(listened) if anchor_artists is None else 2 * anchor_artists / (anchor_artists + listened)
        self.register_buffer("user_scale", scale, persistent=False)  # w_u, [U + 1, 1]
        edges = getattr(catalog, "social_edges", None)
        self.register_buffer("social_index", edges if edges is not None else torch.zeros(2, 0, dtype=torch.long))
        self._set_friends_mean()
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
        self._set_friends_mean()
        self.clear()

    def _set_friends_mean(self) -> None:
        """The row-normalised social adjacency (each user's row averages their friends; rows of
        friendless users are empty) and which users have friends, as buffers that follow the
        module's device."""
        users = self.layout.item_offset
        index = self.social_index.to(self.embedding.weight.device)
        count = degrees(index, users - 1).float()
        weight = 1.0 / count[index[1]]
        self.register_buffer("friends_mean", sparse_adjacency(index, weight, users), persistent=False)
        self.register_buffer("has_friends", (count > 0).float().unsqueeze(1), persistent=False)

    def _layers(self, x: Tensor) -> Tensor:
        """LightGCN's mean of layers ``0..K``, each layer's user rows diffused over the friends:
        ``e_u^(k+1) = (1 - b_u) (A e^(k))_u + b_u mean_{o in F(u)} e_o^(k)`` for a user with
        friends, ``b_u = min(1, w_u b)`` (``b`` = :attr:`diffusion`); an artist's row aggregates
        its listeners' diffused rows as in LightGCN, so friends reach the artists' vectors too."""
        if not self.diffusion or not self.social_index.numel():
            return super().node_vectors(x)
        users = self.layout.item_offset
        share = (self.diffusion * self.user_scale).clamp(max=1.0) * self.has_friends  # b_u, 0 without friends
        layers = [x]
        for _ in range(self.num_layers):
            out = self.conv(layers[-1], self.adj_t)
            friends = self.conv(layers[-1][:users], self.friends_mean)
            mixed = out[:users] * (1 - share) + share * friends
            layers.append(torch.cat([mixed, out[users:]]))
        return layer_mean(layers)

    def _item_space(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(h^I [U + 1, D], every node's propagated vector, the listening attention
        [E, heads] over listen_index or None)``."""
        nodes = self._layers(x)
        users = nodes[: self.layout.item_offset]
        if need_weights:
            out, alpha = self.listening(nodes, self.listen_index, return_attention_weights=True)
        else:
            out, alpha = self.listening(nodes, self.listen_index), None
        attended = (out - nodes)[: self.layout.item_offset]  # sum_a alpha_ua V z_a (0 for items)
        return users + self.mix * self.user_scale * attended, nodes, alpha

    def _social_space(self, users: Tensor) -> Tensor:
        """``h^S`` for every user: the attended sum of the friends' values (0 without friends)."""
        return self.social(users, self.social_index) - users

    def node_vectors(self, x: Tensor) -> Tensor:
        users, nodes, _ = self._item_space(x)
        fused = users + self.mix * self.user_scale * self._social_space(users)
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
        ``w_u c sum_h beta_uoh (h^I_o)_h . (z_item)_h`` over the heads' slices of the vectors. The
        shares plus the user's own part (:meth:`own_part`) add up to the score (the encoder's
        part: a model built with ``item_bias=True`` adds the item's bias on top)."""
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
            contributions = self.mix * self.user_scale[user] * messages @ self.all_items()[item]
        return FriendAttention(friends, weights.mean(-1), contributions)

    @torch.no_grad()
    def own_part(self, user: int, item: int) -> float:
        """``h^I_u . z_item``: what the user's item-space vector gives the item's score (their own
        listening and, with diffusion, their friends' smoothed through the layers); the rest is
        the attended friends' shares."""
        users, _, _ = self._item_space(self.embedding.weight)
        return float(users[user] @ self.all_items()[item])
