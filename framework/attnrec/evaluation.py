"""Ranking protocols and an evaluator that is exact under DDP.

Ranks are tie-pessimistic: a relevant item tied with others gets the worst of their ranks, so
a constant (or untrained, collapsed) model scores at or below chance, never above. A NaN score
is an error, never a hit. Full ranking walks the catalogue in chunks with a running top-k, so
memory is ``O(B * chunk)`` whatever the catalogue size.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, Protocol, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from .interfaces import ItemEncoder, RankingMetric


class Ranking(NamedTuple):
    ranks: Tensor  # [B, T] 1-based pessimistic ranks of relevant items, inf = padding
    num_relevant: Tensor  # [B]
    num_candidates: Tensor  # [B] valid candidates
    topk: Tensor  # [B, K] recommended item ids, best first; 0 (padding) past the valid candidates


def _check_finite(scores: Tensor, what: str) -> None:
    if torch.isnan(scores).any():
        rows = torch.isnan(scores).any(dim=-1).nonzero().flatten()[:5].tolist()
        raise FloatingPointError(
            f"NaN {what} scores for batch rows {rows}: a NaN can never be ranked. Check the user encoder "
            "for fully masked attention rows or a diverged training run."
        )


class Scoring(Protocol):
    """Scores of one batch of users; how a model exposes them to ranking."""

    def chunk(self, lo: int, hi: int) -> Tensor:
        """Scores of items ``lo .. hi - 1`` for every user, ``[B, hi - lo]``."""
        ...

    def items(self, ids: Tensor) -> Tensor:
        """Scores of per-user item ids ``[B, C]`` -> ``[B, C]``."""
        ...

    # Optional: ``common(ids [K]) -> [B, K]``, the scores of one id list for every user (sampled
    # negatives shared by a training batch); without it the model scores ``items`` of the list
    # broadcast to every row.


class VectorScoring:
    """User vectors scored against item vectors by a scorer (the two-tower case), plus an
    optional per-item ``bias [N + 1]`` (``Recommender(item_bias=True)``) added to every score.

    ``items`` is the catalogue's vectors ``[N + 1, D]``, or an item encoder. In training, ids
    are encoded as asked and the whole catalogue only when a chunk is (once per scoring), so a
    sampled loss never pays for every item; in inference every lookup reads the encoder's
    catalogue table, computed once per state of the weights (:meth:`ItemEncoder.vectors`)."""

    def __init__(
        self,
        users: Tensor,
        items: Tensor | ItemEncoder,
        scorer: Callable[[Tensor, Tensor], Tensor],
        bias: Tensor | None = None,
    ) -> None:
        self.users, self.scorer, self.bias = users, scorer, bias
        self.encoder = None if isinstance(items, Tensor) else items
        self.item_vectors: Tensor | None = items if isinstance(items, Tensor) else None

    def catalogue(self) -> Tensor:
        """Every item's vector ``[N + 1, D]``."""
        if self.item_vectors is None:
            assert self.encoder is not None
            self.item_vectors = self.encoder.vectors()
        return self.item_vectors

    def inner_product(self) -> tuple[Tensor, Tensor]:
        """``(users [B, D'], items [N + 1, D'])`` whose product is :meth:`chunk` of the whole
        catalogue when the scorer is a plain inner product (``DotScorer``): the bias rides as
        one more coordinate (users get a 1, items their bias), so fused losses and distillation
        that work on the two factors keep it."""
        users, items = self.users, self.catalogue()
        if self.bias is None:
            return users, items
        one = users.new_ones(*users.shape[:-1], 1)
        return torch.cat([users, one], dim=-1), torch.cat([items, self.bias.to(items.dtype).unsqueeze(-1)], dim=-1)

    def chunk(self, lo: int, hi: int) -> Tensor:
        scores = self.scorer(self.users, self.catalogue()[lo:hi])
        return scores if self.bias is None else scores + self.bias[lo:hi]

    def items(self, ids: Tensor) -> Tensor:
        vectors = self.encoder(ids) if self.item_vectors is None and self.encoder is not None else self.catalogue()[ids]
        scores = self.scorer(self.users, vectors)
        return scores if self.bias is None else scores + self.bias[ids]

    def common(self, ids: Tensor) -> Tensor:
        """Scores of one id list ``[K]`` for every user, ``[B, K]``: its ``[K, D]`` vectors take
        the scorer's shared form (as the catalogue's chunks do), one product instead of ``K``
        vectors gathered per user."""
        return self.items(ids)


class DenseScoring:
    """Scores given as a matrix ``[B, N + 1]`` (column = item id): ranks another system's scores
    under attnrec's protocol and metrics, or small cases in tests."""

    def __init__(self, scores: Tensor) -> None:
        self.scores = scores

    def chunk(self, lo: int, hi: int) -> Tensor:
        return self.scores[:, lo:hi]

    def items(self, ids: Tensor) -> Tensor:
        return self.scores.gather(1, ids)


def rank_full(
    scoring: Scoring,
    num_rows: int,
    targets: Tensor,
    seen: Tensor | None,
    k: int,
    chunk_size: int = 65536,
) -> Ranking:
    """Rank every catalogue item (ids ``1 .. num_rows - 1``) for each user; ``seen`` items
    (except targets) are masked. ``targets [B, T]`` and ``seen [B, S]`` are 0-padded item ids."""
    b, t = targets.shape
    device = targets.device
    relevant = targets != 0
    target_scores = scoring.items(targets).float()  # [B, T]
    _check_finite(target_scores.masked_fill(~relevant, 0.0), "target")
    target_scores = target_scores.masked_fill(~relevant, float("inf"))
    if seen is not None:
        # a seen item that is also a target stays rankable; a repeated item is masked once
        seen = seen.masked_fill((seen.unsqueeze(-1) == targets.unsqueeze(1)).any(-1), 0)
        seen = seen.sort(dim=1).values
        seen[:, 1:] = seen[:, 1:].masked_fill(seen[:, 1:] == seen[:, :-1], 0)
    counts = torch.zeros(b, t, dtype=torch.long, device=device)
    valid_total = torch.zeros(b, dtype=torch.long, device=device)
    top_scores = torch.full((b, 0), float("-inf"), device=device)
    top_items = torch.zeros((b, 0), dtype=torch.long, device=device)
    step = max(1, chunk_size // max(t, 1))
    if device.type == "cpu":  # chunks of ~2^21 scores stay in cache: ranking 2.2x faster on Toys (512 users x 11,925 items)
        step = min(step, max(k, 1024, 2**21 // max(1, b * t)))
    # Masked items are written as -inf into a private copy of each chunk (sparse writes, no
    # dense mask), and NaN is looked for in the chunk's top-k: torch.topk ranks NaN first.
    for lo in range(0, num_rows, step):
        hi = min(lo + step, num_rows)
        scores = scoring.chunk(lo, hi).to(torch.float32, copy=True)  # [B, c]
        masked = torch.zeros(b, dtype=torch.long, device=device)
        if lo == 0:
            scores[:, 0] = float("-inf")  # padding item
            masked += 1
        if seen is not None:
            inside = (seen >= lo) & (seen < hi) & (seen != 0)
            rows, cols = inside.nonzero(as_tuple=True)
            scores[rows, seen[rows, cols] - lo] = float("-inf")
            masked += torch.bincount(rows, minlength=b)
        valid_total += (hi - lo) - masked
        ge = scores.unsqueeze(1) >= target_scores.unsqueeze(2)  # [B, T, c]
        # a relevant item is not ranked against itself
        own = relevant & (targets >= lo) & (targets < hi)
        rb, rt = own.nonzero(as_tuple=True)
        ge[rb, rt, targets[rb, rt] - lo] = False
        counts += ge.view(torch.uint8).sum(dim=2, dtype=torch.int32)  # a bool sum runs ~8x slower on CPU
        kk = min(k, hi - lo)
        chunk_scores, chunk_idx = scores.topk(kk, dim=1)
        _check_finite(chunk_scores, "item")
        merged_scores = torch.cat([top_scores, chunk_scores], dim=1)
        merged_items = torch.cat([top_items, chunk_idx + lo], dim=1)
        keep = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1).indices
        top_scores, top_items = merged_scores.gather(1, keep), merged_items.gather(1, keep)
    # a target scored -inf ties with every masked -inf, which must not count: it is simply last
    counts = torch.where(target_scores == float("-inf"), valid_total.unsqueeze(1) - 1, counts)
    # with fewer than k valid items the list ends in padding, never in a masked (seen) item
    top_items = top_items.masked_fill(top_scores == float("-inf"), 0)
    ranks = torch.where(relevant, (counts + 1).double(), torch.full_like(counts, 0, dtype=torch.double) + float("inf"))
    return Ranking(ranks, relevant.sum(dim=1), valid_total, top_items)


def rank_candidates(scores: Tensor, candidates: Tensor, labels: Tensor, k: int) -> Ranking:
    """Rank given candidate lists (sampled negatives or impressions). ``candidates`` 0 = padding."""
    _check_finite(scores, "candidate")
    valid = candidates != 0
    relevant = (labels > 0) & valid
    scores = scores.float().masked_fill(~valid, float("-inf"))
    ge = (scores.unsqueeze(1) >= scores.unsqueeze(2)) & valid.unsqueeze(1)  # [B, C(self), C(other)]
    ge &= ~torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    ranks = torch.where(relevant, ge.sum(dim=2).double() + 1, torch.full_like(scores, float("inf"), dtype=torch.double))
    order = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return Ranking(ranks, relevant.sum(dim=1), valid.sum(dim=1), candidates.gather(1, order))


class RankingEvaluator(Metric):
    """Accumulates per-list metrics as float64 sums and counts (``dist_reduce_fx="sum"``), so 1 and
    N processes give the same figures when every list is evaluated exactly once.

    Catalogue-level metrics (Coverage@K, Novelty@K, Gini@K) and GAUC need the data's item
    popularity and user count; they are omitted when those are not given. GAUC gives every user
    one vote (the mean of their lists' AUCs), where DIN weights users by impressions: with one
    list per user (leave-one-out) it equals AUC.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        metrics: Sequence[RankingMetric],
        ks: Sequence[int],
        num_items: int,
        num_users: int | None = None,
        popularity: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.metrics = list(metrics)
        self.ks = sorted(set(ks))
        self.num_items = num_items
        self.names: list[tuple[RankingMetric, int | None, str]] = []
        for metric in self.metrics:
            name = type(metric).__name__
            if metric.uses_k:
                self.names += [(metric, k, f"{name}@{k}") for k in self.ks]
            else:
                self.names.append((metric, None, name))
        f64 = torch.float64
        self.add_state("sums", torch.zeros(len(self.names), dtype=f64), dist_reduce_fx="sum")
        self.add_state("lists", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.catalogue = popularity is not None
        if self.catalogue:
            assert popularity is not None
            self.register_buffer("popularity", popularity.to(f64), persistent=False)
            self.add_state("rec_counts", torch.zeros(len(self.ks), num_items + 1, dtype=f64), dist_reduce_fx="sum")
            self.add_state("novelty", torch.zeros(len(self.ks), dtype=f64), dist_reduce_fx="sum")
        self.num_users = num_users
        self.auc = next((m for m in self.metrics if type(m).__name__ == "AUC"), None)
        if num_users is not None and self.auc is not None:
            self.add_state("user_auc", torch.zeros(num_users + 1, dtype=f64), dist_reduce_fx="sum")
            self.add_state("user_lists", torch.zeros(num_users + 1, dtype=f64), dist_reduce_fx="sum")

    def update(self, ranking: Ranking, users: Tensor | None = None) -> None:  # type: ignore[override]
        has_relevant = ranking.num_relevant > 0
        if not bool(has_relevant.all()):
            ranking = Ranking(*(x[has_relevant] for x in ranking))
            users = users[has_relevant] if users is not None else None
        args = (ranking.ranks, ranking.num_relevant, ranking.num_candidates)
        values = [metric(*args, k).sum() for metric, k, _ in self.names]
        self.sums += torch.stack(values).to(self.sums)
        self.lists += ranking.ranks.shape[0]
        if self.catalogue:
            for i, k in enumerate(self.ks):
                top = ranking.topk[:, :k]
                self.rec_counts[i].index_add_(0, top.flatten(), torch.ones(top.numel(), dtype=torch.float64, device=top.device))
                share = (self.popularity[top] / max(float(self.popularity.sum()), 1.0)).clamp(min=1e-12)
                real = top != 0  # short candidate lists (impressions) end in padding, which is no item
                bits = (-torch.log2(share) * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
                self.novelty[i] += bits.sum()
        if users is not None and hasattr(self, "user_auc") and self.auc is not None:
            auc = self.auc(*args, None)
            self.user_auc.index_add_(0, users, auc.to(torch.float64))
            self.user_lists.index_add_(0, users, torch.ones_like(auc, dtype=torch.float64))

    def compute(self) -> dict[str, Tensor]:
        lists = self.lists.clamp(min=1)
        out = {name: self.sums[i] / lists for i, (_, _, name) in enumerate(self.names)}
        if hasattr(self, "user_auc"):
            evaluated = self.user_lists > 0
            per_user = self.user_auc[evaluated] / self.user_lists[evaluated]
            out["GAUC"] = per_user.mean() if per_user.numel() else torch.zeros((), dtype=torch.float64)
        if self.catalogue:
            for i, k in enumerate(self.ks):
                counts = self.rec_counts[i, 1:]
                out[f"Coverage@{k}"] = (counts > 0).double().mean()
                out[f"Novelty@{k}"] = self.novelty[i] / lists
                out[f"Gini@{k}"] = gini(counts)
        return out


def gini(counts: Tensor) -> Tensor:
    """Gini coefficient of how recommendations spread over items: 0 even, 1 all on one item."""
    x = counts.double().sort().values
    n = x.numel()
    total = x.sum()
    if n == 0 or total == 0:
        return torch.zeros((), dtype=torch.float64, device=counts.device)
    index = torch.arange(1, n + 1, dtype=torch.float64, device=counts.device)
    return ((2 * index - n - 1) * x).sum() / (n * total)


def evaluate_popularity(
    datamodule, stage: str = "test", metrics: Sequence[str] = ("HR", "NDCG", "MRR"), ks: Sequence[int] = (10,)
) -> dict[str, float]:
    """The most-popular baseline under the data module's own protocol (seen items masked, or
    the same candidate lists): :class:`~attnrec.baselines.PopularityRecommender`, evaluated
    without a Trainer (``trainer.test`` gives the same figures)."""
    from .baselines import PopularityRecommender

    datamodule.setup(stage)
    model = PopularityRecommender(datamodule.catalog, metrics=metrics, ks=ks).eval()
    loader = datamodule.val_dataloader() if stage == "val" else datamodule.test_dataloader()
    with torch.no_grad():
        for batch in loader:
            model.evaluate_batch(batch)
    return model.evaluation_results()


class TrainsOnBatches(Protocol):
    """What :func:`user_losses` needs of a model: :meth:`attnrec.Recommender.training_loss`."""

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, object]: ...


@torch.no_grad()
def user_losses(model: TrainsOnBatches, batches: Iterable[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """Each user's mean training loss over their windows (``batches`` as collated for training,
    e.g. :func:`attnrec.privacy.window_loader`): ``(users [U], losses [U])``, users sorted.
    Computed in eval mode (no dropout); the model's mode is restored afterwards."""
    training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for batch in batches:
        rows = int(batch["user"].shape[0])
        for i in range(rows):
            one = {k: v[i : i + 1] if v.dim() and v.shape[0] == rows else v for k, v in batch.items()}
            loss, _ = model.training_loss(one)
            if torch.isfinite(loss):  # a window without a target has no loss
                user = int(batch["user"][i])
                sums[user] = sums.get(user, 0.0) + float(loss)
                counts[user] = counts.get(user, 0) + 1
    if training:
        model.train()  # type: ignore[attr-defined]
    users = sorted(sums)
    return torch.tensor(users, dtype=torch.long), torch.tensor([sums[u] / counts[u] for u in users], dtype=torch.float64)


def membership_inference_auc(member_losses: Tensor, nonmember_losses: Tensor) -> float:
    """The loss-threshold membership-inference attack (Yeom et al., CSF 2018): the AUC of telling
    training users (members) from users never trained on by a lower loss — the probability that
    a random member's loss is below a random non-member's, ties counting half. 0.5 is chance
    (nothing learned about who was in the training data); a model that memorises its users
    approaches 1. Per-user losses come from :func:`user_losses`."""
    from torchmetrics.functional.classification import binary_auroc

    if len(member_losses) == 0 or len(nonmember_losses) == 0:
        raise ValueError(
            f"membership_inference_auc needs members and non-members, got {len(member_losses)} and "
            f"{len(nonmember_losses)} losses"
        )
    scores = -torch.cat([member_losses, nonmember_losses]).double()
    labels = torch.cat([torch.ones(len(member_losses)), torch.zeros(len(nonmember_losses))]).long()
    return float(binary_auroc(scores, labels, thresholds=None))
