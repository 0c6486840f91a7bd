"""Target-aware recommenders: DIN (Zhou et al., KDD 2018) and BST (Chen et al., DLP-KDD 2019).

Their user representation depends on the candidate item, so there is no single user vector to
dot with the catalogue: they override :meth:`~attnrec.Recommender.scoring` (every candidate is
scored by the network, in bounded chunks) and the training step (BCE of the next item against
sampled not-clicked items, at every history position).
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnrec import Batch, ItemCatalog, Recommender
from attnrec.attention import MultiHeadAttention, TargetAttention

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
        step = max(1, self.model.hparams.candidate_chunk // max(1, ids.shape[0]))
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
    next item clicked, ``num_negatives`` sampled items not clicked), as the DIN paper builds its
    Amazon/MovieLens sets; ``train_positions > 0`` samples that many positions per window
    instead, trading examples for speed.
    """

    def __init__(self, *args: Any, train_positions: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, loss="bce", **kwargs)
        self.train_positions = train_positions

    def score_candidates(self, history: Tensor, candidates: Tensor, need_weights: bool = False) -> Tensor:
        """Click logits ``[B, C]`` of ``candidates [B, C]`` for users with ``history [B, L]``."""
        encoding = self.user_encoder({"history": history, "query": candidates}, self.item_encoder)
        return self.scorer(encoding.vectors, self.item_encoder(candidates).unsqueeze(-2)).squeeze(-1)

    def scoring(self, batch: Batch) -> CandidateScoring:
        return CandidateScoring(self, batch["history"])

    def _positions(self, target: Tensor) -> tuple[Tensor, Tensor]:
        valid = target != 0
        if self.train_positions <= 0:
            rows, cols = valid.nonzero(as_tuple=True)
            return rows, cols
        cols = torch.multinomial(valid.float(), self.train_positions, replacement=True)  # [B, P]
        rows = torch.arange(target.shape[0], device=target.device).unsqueeze(1).expand_as(cols)
        return rows.flatten(), cols.flatten()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        negatives = batch.get("negatives")
        if negatives is None:
            raise ValueError(
                f"{type(self).__name__} learns clicked vs not-clicked items: set the data module's num_negatives "
                "to at least 1 (e.g. --data.init_args.num_negatives=1)"
            )
        target = batch["target"]
        rows, cols = self._positions(target)
        history = shift_windows(batch["history"], rows, cols)
        candidates = torch.cat([target[rows, cols].unsqueeze(1), negatives[rows, cols]], dim=1)  # [M, 1 + K]
        logits = self.score_candidates(history, candidates)
        negative = candidates[:, 1:] != candidates[:, :1]  # an accidental draw of the target is no negative
        loss = F.softplus(-logits[:, 0]).mean() + (F.softplus(logits[:, 1:]) * negative).sum() / negative.sum().clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=int(rows.numel()))
        return loss

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
    reported per user) on candidate lists, or by full ranking.

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
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: Literal["cosine", "constant"] = "cosine",
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "AUC"),
        ks: Sequence[int] = (10, 20),
        train_positions: int = 0,
        candidate_chunk: int = 8192,
    ) -> None:
        super().__init__(
            catalog, dim,
            item_encoder=functools.partial(FeatureItemEncoder, features=tuple(features)),
            user_encoder=functools.partial(
                TargetInterestEncoder, attention=functools.partial(TargetAttention, hidden=tuple(attention_hidden))
            ),
            scorer=functools.partial(CTRScorer, hidden=tuple(hidden), activation=activation, dropout=dropout),
            lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule, metrics=metrics, ks=ks,
            train_positions=train_positions,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["catalog"])


class BST(TargetAwareRecommender):
    """Behavior Sequence Transformer.

    Items are id + category embeddings concatenated; ``[history..., candidate]`` with a
    position embedding (distance from the candidate) runs through ``num_layers`` post-LN
    transformer blocks (paper: 1 block, 8 heads); the flattened outputs of all tokens and the
    candidate's embedding feed an MLP (1024-512-256, LeakyReLU) that gives the click logit.

    Deviation: the paper's position is the bucketed time gap to the candidate; attnrec
    batches carry order only, so the position is the order distance.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        dim: int = 64,
        features: Sequence[str] = ("category",),
        max_len: int = 50,
        num_layers: int = 1,
        num_heads: int = 8,
        dropout: float = 0.2,
        hidden: Sequence[int] = (1024, 512, 256),
        activation: Activation = "leaky_relu",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: Literal["cosine", "constant"] = "cosine",
        metrics: Sequence[str] = ("HR", "NDCG", "MRR", "AUC"),
        ks: Sequence[int] = (10, 20),
        train_positions: int = 0,
        candidate_chunk: int = 4096,
    ) -> None:
        super().__init__(
            catalog, dim,
            item_encoder=functools.partial(FeatureItemEncoder, features=tuple(features)),
            user_encoder=functools.partial(
                BehaviorSequenceEncoder, max_len=max_len, num_layers=num_layers, dropout=dropout,
                attention=functools.partial(MultiHeadAttention, num_heads=num_heads),
            ),
            scorer=functools.partial(
                CTRScorer, hidden=tuple(hidden), activation=activation, dropout=dropout, user_dim=(max_len + 1) * dim
            ),
            lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule, metrics=metrics, ks=ks,
            train_positions=train_positions,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["catalog"])
