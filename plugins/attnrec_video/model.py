"""Watch-time-aware training and evaluation: a weighted loss and a watch-time-weighted NDCG."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from attnrec.encoders import IdItemEncoder, TransformerUserEncoder
from attnrec.interfaces import Batch, ItemCatalog
from attnrec.model import ItemEncoderFactory, Loss, Recommender, ScorerFactory, UserEncoderFactory
from attnrec.scorers import DotScorer


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
    the video was seen, so a skip after a second barely counts. Weights are normalised over
    the batch, so the loss scale does not depend on them.

    ``warm_negatives_only``: videos without training interactions are left out of the
    softmax and the negatives. In training they would only ever appear as negatives, and the
    model would learn to push exactly the cold-start videos down.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 64,
        item_encoder: ItemEncoderFactory = IdItemEncoder,
        user_encoder: UserEncoderFactory = TransformerUserEncoder,
        scorer: ScorerFactory = DotScorer,
        loss: Loss = "ce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: str = "cosine",
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "Recall", "AUC"),
        ks: Sequence[int] = (10, 20),
        item_chunk_size: int = 65536,
        watch_weight: float = 1.0,
        warm_negatives_only: bool = True,
    ) -> None:
        super().__init__(
            catalog, dim=dim, item_encoder=item_encoder, user_encoder=user_encoder, scorer=scorer, loss=loss, lr=lr,
            weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule, metrics=metrics, ks=ks,  # type: ignore[arg-type]
            item_chunk_size=item_chunk_size,
        )  # fmt: skip
        if watch_weight < 0:
            raise ValueError(f"VideoRecommender: watch_weight={watch_weight} must be >= 0 (0 = unweighted)")
        self.watch_weight = watch_weight
        self.warm_negatives_only = warm_negatives_only
        self.register_buffer("warm", catalog.popularity > 0, persistent=False)
        self.watch_ndcg = WatchNDCG(self.ks)

    # ------------------------------------------------------------ training
    def _loss(self, users: Tensor, target: Tensor, negatives: Tensor | None, batch: Batch, valid: Tensor) -> Tensor:
        per_example = self._per_example_loss(users, target, negatives, batch, valid)
        weight = batch.get("target_weight")
        if weight is None or self.watch_weight == 0:
            return per_example.mean()
        weight = (weight if self.user_encoder.all_positions else weight[:, -1])[valid].to(per_example) ** self.watch_weight
        return (per_example * weight).sum() / weight.sum().clamp(min=1e-8)

    def _per_example_loss(
        self, users: Tensor, target: Tensor, negatives: Tensor | None, batch: Batch, valid: Tensor
    ) -> Tensor:
        """The core's losses, one value per target (``[M]``), cold videos left out as negatives."""
        excluded = ~self.warm if self.warm_negatives_only else torch.zeros_like(self.warm)
        excluded = excluded.clone()
        excluded[0] = True
        if self.loss_name == "ce":
            logits = self.score(users, self.item_encoder.all_items())
            logits = logits.masked_fill(excluded, float("-inf"))
            return F.cross_entropy(logits, target, reduction="none")
        if negatives is None:
            raise ValueError(
                f"loss={self.loss_name!r} needs sampled negatives in the batch; set the data module's "
                "num_negatives to at least 1 (or use loss='ce')"
            )
        pos = self.score(users, self.item_encoder(target).unsqueeze(-2)).squeeze(-1)  # [M]
        neg = self.score(users, self.item_encoder(negatives))  # [M, K]
        usable = ~excluded[negatives] & (negatives != target.unsqueeze(-1))
        if self.loss_name == "sampled_softmax":
            if "negatives_logq" in batch:
                pick = (lambda x: x) if self.user_encoder.all_positions else (lambda x: x[:, -1])
                neg = neg - pick(batch["negatives_logq"])[valid]
                pos = pos - pick(batch["target_logq"])[valid]
            logits = torch.cat([pos.unsqueeze(-1), neg.masked_fill(~usable, float("-inf"))], dim=-1)
            return F.cross_entropy(logits, torch.zeros_like(target), reduction="none")
        count = usable.sum(-1).clamp(min=1)
        if self.loss_name == "bce":
            return F.softplus(-pos) + (F.softplus(neg) * usable).sum(-1) / count
        if self.loss_name == "bpr":
            return (F.softplus(-(pos.unsqueeze(-1) - neg)) * usable).sum(-1) / count
        raise ValueError(f"unknown loss {self.loss_name!r}; choose ce, sampled_softmax, bce or bpr")

    # ---------------------------------------------------------- evaluation
    def _eval_step(self, batch: Batch) -> None:
        ranking = self.rank(batch)
        self.evaluator.update(ranking, batch.get("user"))
        gains = batch.get("candidate_gain" if "candidates" in batch else "target_gain")
        if gains is not None:
            self.watch_ndcg.update(ranking.ranks, gains)

    def _log_evaluation(self, stage: str) -> dict[str, float]:
        results = super()._log_evaluation(stage)
        if self.watch_ndcg.update_count:
            extra = {name: float(value) for name, value in self.watch_ndcg.compute().items()}
            self.log_dict({f"{stage}/{name}": value for name, value in extra.items()}, sync_dist=False)
            results |= extra
        self.watch_ndcg.reset()
        return results
