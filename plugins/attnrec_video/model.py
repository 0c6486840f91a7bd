"""Watch-time-aware training and evaluation: a weighted loss and a watch-time-weighted NDCG."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from attnrec.evaluation import Ranking
from attnrec.interfaces import Batch, ItemCatalog
from attnrec.model import Examples, Recommender


class WatchNDCG(Metric):
    """Watch-time-weighted NDCG@K: ``sum DCG / sum IDCG`` over lists, with each relevant
    item's gain its watch ratio.

    Summed over lists before dividing, so a list whose target was watched to the end weighs
    more than one that was skipped after a second; with one target per list it is the
    gain-weighted mean of per-list NDCG. It needs per-target gains, which the core's
    :class:`~attnrec.interfaces.RankingMetric` signature does not carry, so the video model
    computes it itself. Sums of float64 reduced by ``sum``: exact under DDP.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int]) -> None:
        super().__init__()
        self.ks = sorted(set(ks))
        self.add_state("dcg", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("idcg", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Tensor, gains: Tensor) -> None:  # type: ignore[override]
        """``ranks [B, T]`` (1-based, ``inf`` = not relevant) and ``gains [B, T]`` aligned with them."""
        ranks, gains = ranks.double(), gains.double().masked_fill(~torch.isfinite(ranks.double()), 0.0)
        ideal = gains.sort(dim=1, descending=True).values
        for i, k in enumerate(self.ks):
            hit = ranks <= k
            self.dcg[i] += (gains * hit / torch.log2(ranks.clamp(max=k) + 1.0)).sum()
            top = ideal[:, :k]
            positions = torch.arange(2, top.shape[1] + 2, dtype=torch.float64, device=top.device)
            self.idcg[i] += (top / torch.log2(positions)).sum()

    def compute(self) -> dict[str, Tensor]:
        return {f"WatchNDCG@{k}": self.dcg[i] / self.idcg[i].clamp(min=1e-12) for i, k in enumerate(self.ks)}


class VideoRecommender(Recommender):
    """A Recommender that learns from watch ratio and reports a watch-time-weighted NDCG.

    ``watch_weight``: each training target's loss is weighted by its relevance (the batch's
    ``target_weight``, the clipped watch ratio from :class:`~attnrec_video.VideoDataModule`)
    raised to this power: 0 trains on every watch alike, 1 weighs a watch by how much of
    the video was seen, so a skip after a second barely counts. The core normalises weights
    over the batch, so the loss scale does not depend on them.

    ``warm_negatives_only``: videos without training interactions are left out of the
    softmax and the negatives. In training they would only ever appear as negatives, and the
    model would learn to push exactly the cold-start videos down. Other arguments are
    :class:`~attnrec.Recommender`'s.
    """

    def __init__(
        self, catalog: ItemCatalog, watch_weight: float = 1.0, warm_negatives_only: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(catalog, **kwargs)
        if watch_weight < 0:
            raise ValueError(f"VideoRecommender: watch_weight={watch_weight} must be >= 0 (0 = unweighted)")
        self.watch_weight = watch_weight
        self.warm_negatives_only = warm_negatives_only
        self.register_buffer("warm", catalog.popularity > 0, persistent=False)
        self.watch_ndcg = WatchNDCG(self.ks)

    # ------------------------------------------------------------ training
    def example_weights(self, batch: Batch, examples: Examples) -> Tensor | None:
        weight = super().example_weights(batch, examples)
        if weight is None or self.watch_weight == 0:
            return None
        return weight**self.watch_weight

    def candidate_items(self) -> Tensor | None:
        return self.warm if self.warm_negatives_only else None

    # ---------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: Batch) -> Ranking:
        ranking = super().evaluate_batch(batch)
        gains = batch.get("candidate_gain" if "candidates" in batch else "target_gain")
        if gains is not None:
            self.watch_ndcg.update(ranking.ranks, gains)
        return ranking

    def evaluation_results(self) -> dict[str, float]:
        results = super().evaluation_results()
        if self.watch_ndcg.update_count:
            results |= {name: float(value) for name, value in self.watch_ndcg.compute().items()}
        self.watch_ndcg.reset()
        return results
