"""A multimodal item encoder: one token per modality, fused by attention across modalities."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from attnrec.attention import AdditiveAttention, MultiHeadAttention
from attnrec.interfaces import ItemCatalog, ItemEncoder

from .data import MODALITY_FEATURES

MODALITIES = ("id", "title", "tags", "visual", "audio", "duration")


class MultimodalItemEncoder(ItemEncoder):
    """Encodes a video from whatever it has: id, title, tags, visual, audio, duration.

    Each modality becomes one token (title: word embeddings pooled by additive attention;
    tags: mean tag embedding; visual/audio: a projection of the precomputed vector; duration:
    a bucket embedding), plus a type embedding. A learned *prior* token is always present, so
    no video is ever a fully masked row; absent modalities (``has_<modality>`` is False in
    the catalog) are masked out of a self-attention layer over the tokens and of the additive
    attention pooling that makes the item vector. :meth:`modality_weights` returns that
    pooling's weight on each token.

    Cold start: with ``cold_ids`` (default) the id token is absent for videos with no
    training interactions, whose id embedding never received a gradient and is noise; such a
    video is encoded from content alone. ``id_dropout`` drops the id token of warm videos
    during training with that probability so the model also learns to rank from content;
    ``modality_dropout`` does the same for every content token (a video missing a modality at
    test time is then no surprise).
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int,
        modalities: Sequence[str] | None = None,
        num_heads: int = 2,
        modality_dropout: float = 0.1,
        id_dropout: float = 0.5,
        cold_ids: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(catalog, dim)
        available = ["id"] + [m for m in MODALITIES[1:] if MODALITY_FEATURES[m] in catalog.features]
        if modalities is None:
            modalities = available
        unknown = [m for m in modalities if m not in available]
        if unknown:
            raise ValueError(
                f"MultimodalItemEncoder: modalities {unknown} are not in this catalog; available: {', '.join(available)} "
                "(a content modality needs its feature, e.g. 'visual' needs catalog.features['visual'])"
            )
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.modality_dropout, self.id_dropout = modality_dropout, id_dropout
        rows = catalog.num_items + 1
        for m in self.modalities:
            if m == "id":
                has = catalog.popularity > 0 if cold_ids else torch.ones(rows, dtype=torch.bool)
                has[0] = False
            else:
                self.register_buffer(MODALITY_FEATURES[m], catalog.features[MODALITY_FEATURES[m]], persistent=False)
                feature = catalog.features.get(f"has_{m}")
                has = feature.bool() if feature is not None else _nonzero(catalog.features[MODALITY_FEATURES[m]])
            self.register_buffer(f"has_{m}", has, persistent=False)
        self.prior = nn.Parameter(torch.randn(dim) * 0.02)
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities) + 1, dim) * 0.02)
        if "id" in self.modalities:
            self.id_embedding = nn.Embedding(rows, dim, padding_idx=0)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
        if "title" in self.modalities:
            self.word_embedding = nn.Embedding(catalog.cardinality("title_tokens"), dim, padding_idx=0)
            self.title_pool = AdditiveAttention(dim)
        if "tags" in self.modalities:
            self.tag_embedding = nn.Embedding(catalog.cardinality("tags"), dim, padding_idx=0)
        for m in ("visual", "audio"):
            if m in self.modalities:
                self.add_module(f"{m}_proj", nn.Sequential(nn.Linear(catalog.features[m].shape[1], dim), nn.LayerNorm(dim)))
        if "duration" in self.modalities:
            self.duration_embedding = nn.Embedding(catalog.cardinality("duration_bucket"), dim, padding_idx=0)
        self.norm = nn.LayerNorm(dim)
        self.fusion = MultiHeadAttention(dim, num_heads=num_heads)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.pool = AdditiveAttention(dim)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, dim))
        # start with item vectors as small as an id embedding's: large initial logits saturate
        # the softmax and the encoder collapses onto popularity
        nn.init.normal_(self.out[-1].weight, std=0.01)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def token_names(self) -> list[str]:
        """Names of the tokens :meth:`modality_weights` weighs, in order."""
        return ["prior", *self.modalities]

    def _token(self, modality: str, ids: Tensor) -> Tensor:
        if modality == "id":
            return self.id_embedding(ids)
        if modality == "title":
            words = self.title_tokens[ids]
            vectors = self.word_embedding(words)
            query = vectors.new_zeros(len(ids), 1, self.dim)
            pooled, _ = self.title_pool(query, vectors, vectors, mask=(words != 0)[:, None, None, :])
            return pooled[:, 0]
        if modality == "tags":
            tags = self.tags[ids]
            present = (tags != 0).unsqueeze(-1)
            return (self.tag_embedding(tags) * present).sum(1) / present.sum(1).clamp(min=1)
        if modality in ("visual", "audio"):
            return getattr(self, f"{modality}_proj")(getattr(self, modality)[ids])
        return self.duration_embedding(self.duration_bucket[ids])

    def _fuse(self, ids: Tensor, training: bool) -> tuple[Tensor, Tensor]:
        """Vectors ``[n, dim]`` of item ids ``[n]`` and the pooling weights ``[n, 1 + M]``."""
        n = len(ids)
        tokens = [self.prior.expand(n, self.dim)] + [self._token(m, ids) for m in self.modalities]
        x = torch.stack(tokens, dim=1) + self.type_embedding
        present = torch.stack([torch.ones_like(ids, dtype=torch.bool)] + [getattr(self, f"has_{m}")[ids] for m in self.modalities], 1)
        if training:
            rates = torch.tensor(
                [0.0] + [self.id_dropout if m == "id" else self.modality_dropout for m in self.modalities], device=x.device
            )
            present = present & (torch.rand(present.shape, device=x.device) >= rates)
        x = x * present.unsqueeze(-1)
        mask = present[:, None, None, :]
        h = self.norm(x)
        x = x + self.fusion(h, h, h, mask=mask).values
        x = x + self.ffn(self.ffn_norm(x))
        query = x.new_zeros(n, 1, self.dim)
        pooled, weights = self.pool(query, x, x, mask=mask, need_weights=True)
        vectors = self.out(pooled[:, 0]) * (ids != 0).unsqueeze(-1)  # row 0 is padding
        return vectors, weights[:, 0, 0]

    def forward(self, items: Tensor) -> Tensor:
        # each distinct video is encoded once per call (a batch of histories repeats many)
        ids, inverse = torch.unique(items.reshape(-1), return_inverse=True)
        vectors, _ = self._fuse(ids, self.training)
        return vectors[inverse].view(*items.shape, self.dim)

    @torch.no_grad()
    def modality_weights(self, items: Tensor) -> Tensor:
        """Attention weight on each token (see :attr:`token_names`) per item, ``[..., 1 + M]``;
        an absent modality gets 0. Computed without modality dropout."""
        ids, inverse = torch.unique(items.reshape(-1), return_inverse=True)
        _, weights = self._fuse(ids, training=False)
        return weights[inverse].view(*items.shape, weights.shape[-1])


def _nonzero(feature: Tensor) -> Tensor:
    return feature.reshape(feature.shape[0], -1).ne(0).any(dim=1)
