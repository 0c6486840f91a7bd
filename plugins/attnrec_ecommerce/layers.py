"""Building blocks of the click-through-rate style models (DIN, BST): side-feature item
embeddings, Dice, the MLP scorer and the target-aware user encoders."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from attnrec import Attention, Batch, ItemCatalog, ItemEncoder, Scorer, UserEncoder, UserEncoding
from attnrec.attention import MultiHeadAttention, TargetAttention
from attnrec.encoders import AttentionFactory

Activation = Literal["dice", "prelu", "relu", "leaky_relu"]


class FeatureItemEncoder(ItemEncoder):
    """Item id embedding concatenated with embeddings of categorical catalog features.

    DIN and BST describe a product by ``goods_id`` *and* ``cate_id`` (and shop/brand) embeddings
    concatenated, so an item seen once still shares what its category has learned. The width
    ``dim`` is split evenly between the fields (the id takes the remainder), keeping the
    framework's one-width contract.
    """

    def __init__(
        self, catalog: ItemCatalog, dim: int, features: Sequence[str] = ("category",), init_std: float = 0.02
    ) -> None:
        super().__init__(catalog, dim)
        missing = [name for name in features if name not in catalog.features]
        if missing:
            available = ", ".join(sorted(catalog.features)) or "none"
            raise ValueError(
                f"FeatureItemEncoder: the catalog has no feature {missing[0]!r} (available: {available}); "
                "set features= to some of those, or [] for ids only"
            )
        self.features = list(features)
        width = dim // (1 + len(self.features))
        if width == 0:
            raise ValueError(f"FeatureItemEncoder: dim={dim} is too small for {1 + len(self.features)} fields")
        self.embedding = nn.Embedding(catalog.num_items + 1, dim - width * len(self.features), padding_idx=0)
        self.feature_embeddings = nn.ModuleList()
        for i, name in enumerate(self.features):
            codes = catalog.features[name]
            if codes.dim() != 1 or codes.is_floating_point():
                raise ValueError(
                    f"FeatureItemEncoder: catalog feature {name!r} must be one integer code per item, got "
                    f"dtype {codes.dtype} and shape {tuple(codes.shape)}"
                )
            self.register_buffer(f"codes_{i}", codes.long().clone())
            self.feature_embeddings.append(nn.Embedding(catalog.cardinality(name), width, padding_idx=0))
        for module in (self.embedding, *self.feature_embeddings):
            nn.init.normal_(module.weight, std=init_std)
            module.weight.data[0].zero_()

    def forward(self, items: Tensor) -> Tensor:
        parts = [self.embedding(items)]
        for i, embedding in enumerate(self.feature_embeddings):
            parts.append(embedding(getattr(self, f"codes_{i}")[items]))
        return torch.cat(parts, dim=-1)


class Dice(nn.Module):
    """DIN's data-adaptive activation: a PReLU whose switch point follows the input's
    distribution, ``p(s) = sigmoid(BN(s))`` with batch statistics in training and running
    averages at inference (so a user's scores never depend on the rest of the batch)."""

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, affine=False, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.norm(x.reshape(-1, x.shape[-1]))).view_as(x)
        return p * x + (1 - p) * self.alpha * x


class UnitPReLU(nn.Module):
    """PReLU with one slope per unit of the *last* dimension (``nn.PReLU`` takes dimension 1 as
    the channels, which is the candidate axis for ``[B, C, H]`` inputs)."""

    def __init__(self, num_features: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), init))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def activation_layer(name: Activation, width: int) -> nn.Module:
    if name == "dice":
        return Dice(width)
    if name == "prelu":
        return UnitPReLU(width)
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    raise ValueError(f"unknown activation {name!r}; choose dice, prelu, relu or leaky_relu")


def mlp(width: int, hidden: Sequence[int], activation: Activation, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), activation_layer(activation, size), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class CTRScorer(Scorer):
    """A click-through-rate MLP on ``[user, item]`` (DIN's 200-80-1 with Dice, BST's
    1024-512-256-1 with LeakyReLU); it returns logits.

    ``user_dim`` is the width of the user side when it is not ``dim`` (BST feeds the flattened
    transformer output). Shapes follow :class:`~attnrec.Scorer`: ``users [..., U]`` with
    ``items [N, D]`` or ``[..., C, D]``.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (200, 80),
        activation: Activation = "dice",
        dropout: float = 0.0,
        user_dim: int = 0,
    ) -> None:
        super().__init__(dim)
        self.mlp = mlp((user_dim or dim) + dim, hidden, activation, dropout)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        if items.dim() == 2:
            items = items.expand(*users.shape[:-1], *items.shape)
        users = users.unsqueeze(-2).expand(*items.shape[:-1], users.shape[-1])
        return self.mlp(torch.cat([users, items], dim=-1)).squeeze(-1)


def _query(batch: Batch, encoder: str) -> Tensor:
    if "query" not in batch:
        raise ValueError(
            f"{encoder} is target-aware: the batch needs 'query', the candidate item ids [B, C] to encode the "
            "history against (DIN and BST set it; a plain Recommender cannot use this encoder)"
        )
    return batch["query"]


class TargetInterestEncoder(UserEncoder):
    """DIN's user interest: the history's item vectors weighted by their relevance to each
    candidate (``query [B, C]``), giving one user vector per candidate ``[B, C, D]``.

    The default attention is the activation unit (:class:`~attnrec.attention.TargetAttention`,
    an MLP over ``[h, q, h - q, h * q]`` with unnormalised weights, as in the paper).
    """

    required_keys = ("history", "query")

    def __init__(self, dim: int, attention: AttentionFactory = TargetAttention) -> None:
        super().__init__(dim)
        self.attention = attention(dim)

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        history, query = batch["history"], _query(batch, type(self).__name__)
        keys = item_encoder(history)
        mask = (history != 0)[:, None, None, :]
        out, weights = self.attention(item_encoder(query), keys, keys, mask=mask, need_weights=need_weights)
        return UserEncoding(out, {"target": weights} if weights is not None else None)


class _PostNormBlock(nn.Module):
    """The original Transformer block, as BST uses it: ``LayerNorm(x + Dropout(sublayer(x)))``
    with a LeakyReLU feed-forward."""

    def __init__(self, dim: int, attention: Attention, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention = attention
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.LeakyReLU(0.01), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attention(x, x, x, mask=mask, need_weights=need_weights)
        x = self.attn_norm(x + self.dropout(attended))
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, weights


class BehaviorSequenceEncoder(UserEncoder):
    """BST's transformer over the behaviour sequence *plus* the candidate item.

    For every candidate in ``query [B, C]`` it runs ``[history..., candidate]`` (``max_len + 1``
    tokens, bidirectional, padding masked) through post-LN blocks and returns the flattened
    outputs of all tokens ``[B, C, (max_len + 1) * dim]``, which BST's MLP reads. The position
    feature is the distance from the candidate (0 for the candidate, 1 for the latest
    behaviour ...), standing in for the paper's bucketed time gap when batches carry no times.
    """

    required_keys = ("history", "query")

    def __init__(
        self,
        dim: int,
        max_len: int = 50,
        num_layers: int = 1,
        dropout: float = 0.2,
        ffn_dim: int = 0,
        attention: AttentionFactory = MultiHeadAttention,
    ) -> None:
        super().__init__(dim)
        self.max_len = max_len
        self.positions = nn.Embedding(max_len + 1, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _PostNormBlock(dim, attention(dim), ffn_dim or 4 * dim, dropout) for _ in range(num_layers)
        )

    @property
    def output_dim(self) -> int:
        return (self.max_len + 1) * self.dim

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        history, query = batch["history"], _query(batch, type(self).__name__)
        b, length = history.shape
        if length > self.max_len:
            raise ValueError(
                f"BehaviorSequenceEncoder: history length {length} exceeds max_len={self.max_len}; set the data "
                "module's max_len to at most the model's max_len"
            )
        history = nn.functional.pad(history, (self.max_len - length, 0))
        c = query.shape[1]
        tokens = torch.cat([history.unsqueeze(1).expand(b, c, self.max_len), query.unsqueeze(-1)], dim=-1)
        tokens = tokens.reshape(b * c, self.max_len + 1)
        distance = torch.arange(self.max_len, -1, -1, device=tokens.device)
        present = tokens != 0
        present[:, -1] = True  # the candidate is always a key, so no row is empty
        x = item_encoder(tokens) + self.positions(distance)
        x = self.input_dropout(x) * present.unsqueeze(-1)
        mask = present[:, None, None, :]
        weights: dict[str, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, w = block(x, mask, need_weights)
            if w is not None:
                weights[f"layer{i}"] = w.reshape(b, c, *w.shape[1:])
        x = x * present.unsqueeze(-1)  # padding slots carry nothing into the MLP
        return UserEncoding(x.reshape(b, c, self.output_dim), weights if need_weights else None)
