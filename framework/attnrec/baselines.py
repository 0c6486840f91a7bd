"""Baselines as Recommenders, so they are evaluated by the same code and protocol as models."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .interfaces import Batch, ItemCatalog, ItemEncoder, UserEncoder, UserEncoding
from .model import Recommender


class PopularityItemEncoder(ItemEncoder):
    """Each item's training popularity as a one-dimensional vector."""

    def __init__(self, catalog: ItemCatalog, dim: int = 1) -> None:
        super().__init__(catalog, dim)
        self.register_buffer("popularity", catalog.popularity.float().unsqueeze(1).expand(-1, dim).clone())

    def forward(self, items: Tensor) -> Tensor:
        return self.popularity[items]

    def all_items(self) -> Tensor:
        return self.popularity


class ConstantUserEncoder(UserEncoder):
    """Every user is the same all-ones vector: a dot product with it reads the item's vector."""

    all_positions = True

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        history = batch["history"]
        shape = (*history.shape, self.dim) if all_positions else (history.shape[0], self.dim)
        return UserEncoding(torch.ones(shape, device=history.device), {} if need_weights else None)


class PopularityRecommender(Recommender):
    """The most-popular baseline: every user gets the items' training popularity as scores.
    It has nothing to learn; ``trainer.test(PopularityRecommender(data.catalog), data)`` (or
    ``attnrec test --model PopularityRecommender``) evaluates it under the data's protocol."""

    def __init__(
        self,
        catalog: ItemCatalog,
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "Recall", "AUC"),
        ks: Sequence[int] = (10, 20),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog, dim=1, item_encoder=PopularityItemEncoder, user_encoder=ConstantUserEncoder, metrics=metrics, ks=ks,
            **kwargs,
        )  # fmt: skip

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.protocol:
            self.protocol["loss"] = "none (nothing to train)"
