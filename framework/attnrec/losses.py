"""The built-in training objectives, registered as the built-in ``losses``.

Each returns one loss per example (the model reduces, with per-example weights when the batch
carries them); see :class:`attnrec.interfaces.Loss` for the contract.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .interfaces import Loss


def split_candidates(logits: Tensor, positive: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """The positive's logit ``[M]`` and a ``[M, C]`` mask of the valid negatives (every valid
    candidate but the positive)."""
    column = positive.unsqueeze(1)
    negatives = torch.ones_like(logits, dtype=torch.bool).scatter(1, column, False)
    if mask is not None:
        negatives = negatives & mask
    return logits.gather(1, column).squeeze(1), negatives


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """``-log_softmax(x)[positive]`` over the valid candidates, its gradient
    ``softmax(x) - onehot`` written into one buffer.

    Hand-written for speed: ``masked_fill`` + ``F.cross_entropy`` make a masked copy, the
    log-softmax, a zero-filled NLL gradient, the log-softmax gradient and the masked gradient,
    each ``[M, C]``; over a whole catalogue these memory passes cost a CPU as much as the
    logits' matmul. Here: the masked copy and the log-softmax forward, three passes backward (a
    masked candidate's ``exp(-inf)`` is an exact 0). Measured 1.5x faster than the pair for
    2,200 x 11,925 logits on 2 CPU cores; same values to float rounding (tests/test_losses.py)."""

    generate_vmap_rule = True  # differentially private training vmaps per-user gradients through it

    @staticmethod
    def forward(logits: Tensor, positive: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        x = logits if mask is None else torch.where(mask, logits, float("-inf"))
        log_probs = torch.log_softmax(x, dim=1)
        return -log_probs.gather(1, positive.unsqueeze(1)).squeeze(1), log_probs

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1], inputs[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor, None, None]:
        log_probs, positive = ctx.saved_tensors
        out = log_probs.exp()
        out.scatter_add_(1, positive.unsqueeze(1), -torch.ones_like(grad).unsqueeze(1))
        return out.mul_(grad.unsqueeze(1)), None, None


class _ChunkedCatalogCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy of ``users @ items.T`` (plus a ``bias`` of 0 or -inf per item)
    computed ``chunk`` rows at a time, forward and backward, so the ``[M, N]`` logits never exist
    whole: memory is ``O(chunk x N)``, and on a CPU each chunk's logits, softmax and gradient stay
    in cache instead of making a dozen passes through memory. The backward recomputes each
    chunk's logits (one matmul more than autograd's three). Hand-written for that memory and
    speed, as Cut Cross-Entropy (Wijmans et al., 2024) and gSASRec's successors do on GPUs.
    Both passes run in float32 with autocast off (the backward's recomputed logits must be the
    forward's); first-order gradients only."""

    @staticmethod
    def forward(ctx: Any, users: Tensor, items: Tensor, positive: Tensor, bias: Tensor, chunk: int) -> Tensor:
        lse, chosen = users.new_empty(len(users)), users.new_empty(len(users))
        with torch.autocast(users.device.type, enabled=False):
            for lo in range(0, len(users), chunk):
                logits = torch.addmm(bias, users[lo : lo + chunk], items.T)
                lse[lo : lo + chunk] = torch.logsumexp(logits, dim=1)
                chosen[lo : lo + chunk] = logits.gather(1, positive[lo : lo + chunk].unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(users, items, positive, bias, lse)
        ctx.chunk = chunk
        return lse - chosen

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        users, items, positive, bias, lse = ctx.saved_tensors
        grad = grad.float()
        d_users, d_items = torch.empty_like(users), torch.zeros_like(items)
        with torch.autocast(users.device.type, enabled=False):
            for lo in range(0, len(users), ctx.chunk):
                part = slice(lo, lo + ctx.chunk)
                probs = torch.addmm(bias, users[part], items.T).sub_(lse[part].unsqueeze(1)).exp_()
                probs.scatter_add_(1, positive[part].unsqueeze(1), -torch.ones_like(lse[part]).unsqueeze(1))
                probs.mul_(grad[part].unsqueeze(1))
                torch.mm(probs, items, out=d_users[part])
                d_items.addmm_(probs.T, users[part])
        return d_users, d_items, None, None, None


def catalog_cross_entropy(users: Tensor, items: Tensor, positive: Tensor, allowed: Tensor) -> Tensor:
    """Per-example softmax cross-entropy of ``users [M, D]`` against every item ``items [N, D]``
    (dot products), over the ``allowed [N]`` items, the positive being item ``positive [M]``:
    ``CrossEntropyLoss`` of the logits ``users @ items.T`` without making them (see
    :class:`_ChunkedCatalogCrossEntropy`), in chunks of :func:`catalog_chunk` rows."""
    bias = torch.zeros(items.shape[0], device=items.device).masked_fill(~allowed, float("-inf"))
    return _ChunkedCatalogCrossEntropy.apply(users.float(), items.float(), positive, bias, catalog_chunk(users, items))


def catalog_chunk(users: Tensor, items: Tensor) -> int:
    """Rows per chunk of a chunked catalogue loss: about 2^20 logits on a CPU (its cache), 2^26
    on an accelerator (memory)."""
    budget = 2**20 if users.device.type == "cpu" else 2**26
    return max(8, budget // max(1, items.shape[0]))


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy over the whole catalogue (the strongest objective for SASRec-style
    models when the catalogue fits; Petrov & Macdonald, RecSys 2023). With the default scoring
    and a ``DotScorer`` the model computes it by :func:`catalog_cross_entropy`, without the
    ``[M, N]`` logits."""

    candidates = "catalog"

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        return _SoftmaxCrossEntropy.apply(logits.float(), positive, mask)[0]

    def catalog_loss(self, users: Tensor, items: Tensor, positive: Tensor, allowed: Tensor) -> Tensor:
        return catalog_cross_entropy(users, items, positive, allowed)


class SampledSoftmaxLoss(CrossEntropyLoss):
    """Softmax over the positive and the batch's sampled negatives, logQ-corrected by the model
    when the sampler reports its probabilities (popularity sampling); accidental hits of the
    positive are masked out."""

    candidates = "sampled"
    log_q_correction = True


class BCELoss(Loss):
    """Binary cross-entropy of the positive against each sampled negative (SASRec's paper loss):
    ``softplus(-s+) + mean over valid negatives of softplus(s-)``."""

    candidates = "sampled"

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        pos, negatives = split_candidates(logits.float(), positive, mask)
        count = negatives.sum(dim=1).clamp(min=1)
        return F.softplus(-pos) + (F.softplus(logits.float()) * negatives).sum(dim=1) / count


class BPRLoss(Loss):
    """Bayesian personalised ranking: the mean over valid negatives of ``-log sigmoid(s+ - s-)``."""

    candidates = "sampled"

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        pos, negatives = split_candidates(logits.float(), positive, mask)
        pairwise = F.softplus(logits.float() - pos.unsqueeze(1))  # -log sigmoid(s+ - s-)
        return (pairwise * negatives).sum(dim=1) / negatives.sum(dim=1).clamp(min=1)


class GBCELoss(Loss):
    """Generalised BCE of gSASRec (Petrov & Macdonald, RecSys 2023): BCE with the positive's
    probability raised to ``beta``, which undoes the overconfidence that negative sampling
    teaches a model, so few negatives train almost as well as the full softmax.

    ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)`` with the sampling rate
    ``alpha = k / (N - 1)`` (``k`` negatives of ``N`` items) and calibration ``t`` in ``[0, 1]``
    (0: plain BCE; 1: fully calibrated). ``log sigmoid(s)^beta = beta * log sigmoid(s)``, so
    the loss is ``beta * softplus(-s+) + sum of softplus(s-)`` over valid negatives, divided by
    the number of valid candidates as gSASRec's mean BCE does; the paper's float64 clamping of
    ``sigmoid(s)^-beta`` is not needed in this form.
    """

    candidates = "sampled"

    def __init__(self, t: float = 0.75) -> None:
        super().__init__()
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"GBCELoss: t={t} must be in [0, 1] (0 is plain BCE, 1 fully calibrated)")
        self.t = t
        self.num_items: int | None = None

    def bind(self, num_items: int) -> None:
        self.num_items = num_items

    def beta(self, num_negatives: int) -> float:
        if self.num_items is None:
            raise RuntimeError("GBCELoss needs the catalogue size: the model calls bind(num_items) before training")
        alpha = num_negatives / max(1, self.num_items - 1)
        return alpha * (self.t * (1.0 - 1.0 / alpha) + 1.0 / alpha)

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        pos, negatives = split_candidates(logits.float(), positive, mask)
        beta = self.beta(logits.shape[1] - 1)
        total = beta * F.softplus(-pos) + (F.softplus(logits.float()) * negatives).sum(dim=1)
        return total / (negatives.sum(dim=1) + 1)


BUILTIN_LOSSES = (CrossEntropyLoss, SampledSoftmaxLoss, BCELoss, BPRLoss, GBCELoss)
