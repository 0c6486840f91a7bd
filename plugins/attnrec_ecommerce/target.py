"""Target-aware recommenders: DIN (Zhou et al., KDD 2018) and BST (Chen et al., DLP-KDD 2019).

Their user representation depends on the candidate item, so there is no single user vector to
dot with the catalogue: they override :meth:`~attnrec.Recommender.scoring` (every candidate is
scored by the network, in bounded chunks), which training and evaluation share, and which
positions are training examples (every history position, as the DIN paper builds its sets).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch
from torch import Tensor

from attnrec import Batch, ItemCatalog, Recommender
from attnrec.attention import MultiHeadAttention, TargetAttention
from attnrec.losses import BCELoss
from attnrec.model import BUILT_COMPONENTS, Examples, LossFactory, example_negatives

from .layers import Activation, BehaviorSequenceEncoder, CTRScorer, FeatureItemEncoder, TargetInterestEncoder


def shift_windows(history: Tensor, rows: Tensor, ends: Tensor) -> Tensor:
    """Left-padded histories ``[M, L]`` that stop at position ``ends[m]`` of ``history[rows[m]]``:
    the prefix a training example at that position may see, realigned to the right edge."""
    length = history.shape[1]
    index = torch.arange(length, device=history.device) - (length - 1 - ends).unsqueeze(1)  # [M, L]
    out = history[rows].gather(1, index.clamp(min=0))
    return out.masked_fill(index < 0, 0)


class CandidateScoring:
    """Scores of a target-aware model for one batch of users, computed ``chunk`` (user,
    candidate) pairs at a time so memory stays bounded in full ranking."""

    def __init__(self, model: TargetAwareRecommender, history: Tensor) -> None:
        self.model, self.history = model, history

    def items(self, ids: Tensor) -> Tensor:
        step = max(1, self.model.candidate_chunk // max(1, ids.shape[0]))
        scores = [self.model.score_candidates(self.history, ids[:, lo : lo + step]) for lo in range(0, ids.shape[1], step)]
        return torch.cat(scores, dim=1) if scores else torch.zeros(ids.shape, device=ids.device)  # no candidates

    def chunk(self, lo: int, hi: int) -> Tensor:
        ids = torch.arange(lo, hi, device=self.history.device).expand(self.history.shape[0], -1)
        return self.items(ids)


class TargetAwareRecommender(Recommender):
    """Shared machinery of DIN and BST: the user encoder reads ``history`` and ``query``
    (candidates ``[B, C]``) and returns one vector per candidate; the scorer maps (vector,
    candidate) to a click logit.

    Training: every position ``t`` of a training window is an example (history up to ``t``,
    next item clicked, ``num_negatives`` sampled items not clicked: ``BCELoss`` by default), as
    the DIN paper builds its Amazon/MovieLens sets; ``train_positions > 0`` samples that many
    positions per window instead, trading examples for speed. ``candidate_chunk`` bounds the
    (user, candidate) pairs scored at once.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        loss: LossFactory | str = BCELoss,
        train_positions: int = 0,
        candidate_chunk: int = 8192,
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "AUC"),
        **kwargs: Any,
    ) -> None:
        super().__init__(catalog, loss=loss, metrics=metrics, **kwargs)
        self.train_positions = train_positions
        self.candidate_chunk = candidate_chunk

    def score_candidates(self, history: Tensor, candidates: Tensor, need_weights: bool = False) -> Tensor:
        """Click logits ``[B, C]`` of ``candidates [B, C]`` for users with ``history [B, L]``."""
        encoding = self.user_encoder({"history": history, "query": candidates}, self.item_encoder)
        logits = self.scorer(encoding.vectors, self.item_encoder(candidates).unsqueeze(-2)).squeeze(-1)
        return logits if self.item_bias is None else logits + self.item_bias[candidates]

    def scoring(self, batch: Batch, examples: Examples | None = None) -> CandidateScoring:
        if examples is None:
            return CandidateScoring(self, batch["history"])
        return CandidateScoring(self, shift_windows(batch["history"], examples.rows, examples.positions))

    def training_examples(self, batch: Batch) -> Examples:
        target = batch["target"]
        valid = target != 0
        if self.train_positions <= 0:
            rows, positions = valid.nonzero(as_tuple=True)
        else:
            positions = torch.multinomial(valid.float(), self.train_positions, replacement=True)  # [B, P]
            rows = torch.arange(target.shape[0], device=target.device).unsqueeze(1).expand_as(positions)
            rows, positions = rows.flatten(), positions.flatten()
        return Examples(rows, positions, target[rows, positions], example_negatives(batch, rows, positions))

    @torch.no_grad()
    def attention_weights(self, batch: Batch, candidates: Tensor | None = None) -> dict[str, Tensor]:
        """Attention weights behind the scores of ``candidates [B, C]`` (default: the batch's
        ``candidates``, else its ``targets``), by layer name; each has the candidates as its
        second dimension."""
        if candidates is None:
            candidates = batch.get("candidates", batch.get("targets"))
        if candidates is None:
            raise ValueError(
                f"{type(self).__name__}.attention_weights needs candidates [B, C]: pass candidates=, or a batch "
                "with 'candidates' or 'targets'"
            )
        encoding = self.user_encoder(
            {"history": batch["history"], "query": candidates}, self.item_encoder, need_weights=True
        )
        return encoding.weights or {}


class DIN(TargetAwareRecommender):
    """Deep Interest Network.

    Items are id + category embeddings concatenated (``features``); the user's interest in a
    candidate is the sum of the history's item vectors weighted by the activation unit
    (an MLP over ``[h, q, h - q, h * q]``, weights not softmax-normalised, as in the paper);
    an MLP (200-80-1, Dice by default, PReLU on request) scores ``[interest, candidate]``.
    Trained with BCE on clicked vs sampled not-clicked items; evaluate with ``AUC`` (and GAUC,
    reported per user) on candidate lists, or by full ranking. Other arguments are
    :class:`TargetAwareRecommender`'s and :class:`~attnrec.Recommender`'s.

    Not reproduced: the mini-batch aware regulariser (use ``weight_decay``) and user-profile /
    context features (the data carry none).
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 32,
        features: Sequence[str] = ("category",),
        attention_hidden: Sequence[int] = (80, 40),
        hidden: Sequence[int] = (200, 80),
        activation: Activation = "dice",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog, dim=dim,
            item_encoder=functools.partial(FeatureItemEncoder, features=tuple(features)),
            user_encoder=functools.partial(
                TargetInterestEncoder, attention=functools.partial(TargetAttention, hidden=tuple(attention_hidden))
            ),
            scorer=functools.partial(CTRScorer, hidden=tuple(hidden), activation=activation, dropout=dropout),
            **kwargs,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["catalog", *BUILT_COMPONENTS])


class BST(TargetAwareRecommender):
    """Behavior Sequence Transformer.

    Items are id + category embeddings concatenated; ``[history..., candidate]`` with a
    position embedding (distance from the candidate) runs through ``num_layers`` post-LN
    transformer blocks (paper: 1 block, 8 heads); the flattened outputs of all tokens and the
    candidate's embedding feed an MLP (1024-512-256, LeakyReLU) that gives the click logit.
    ``max_len`` comes from the data (the MLP's input width depends on it).

    Deviation: the paper's position is the bucketed time gap to the candidate; attnrec
    batches carry order only, so the position is the order distance.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        features: Sequence[str] = ("category",),
        max_len: int = 50,
        num_layers: int = 1,
        num_heads: int = 8,
        dropout: float = 0.2,
        hidden: Sequence[int] = (1024, 512, 256),
        activation: Activation = "leaky_relu",
        candidate_chunk: int = 4096,
        dim: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog, dim=dim, max_len=max_len, candidate_chunk=candidate_chunk,
            item_encoder=functools.partial(FeatureItemEncoder, features=tuple(features)),
            user_encoder=functools.partial(
                BehaviorSequenceEncoder, num_layers=num_layers, dropout=dropout,
                attention=functools.partial(MultiHeadAttention, num_heads=num_heads),
            ),
            scorer=functools.partial(
                CTRScorer, hidden=tuple(hidden), activation=activation, dropout=dropout, user_dim=(max_len + 1) * dim
            ),
            **kwargs,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["catalog", *BUILT_COMPONENTS])
