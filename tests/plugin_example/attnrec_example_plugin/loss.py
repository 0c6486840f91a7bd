from __future__ import annotations

import torch
from torch import Tensor

import attnrec


class LabelSmoothingLoss(attnrec.Loss):
    """Full-catalogue softmax cross-entropy with label smoothing over the *valid* candidates.

    Plain cross-entropy keeps rewarding a more confident positive, so a large model on a small
    data set sharpens its scores until it memorises; smoothing moves ``smoothing`` of the target
    mass onto a uniform distribution, which caps the useful margin of the positive. The uniform
    part covers only candidates the mask leaves valid: ``F.cross_entropy(label_smoothing=...)``
    spreads it over every column, so masked (``-inf``) padding or seen items make it infinite.
    ``smoothing=0`` is :class:`attnrec.losses.CrossEntropyLoss`.
    """

    candidates = "catalog"

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"LabelSmoothingLoss: smoothing={smoothing} must be in [0, 1)")
        self.smoothing = smoothing

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        valid = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask
        log_p = logits.float().masked_fill(~valid, float("-inf")).log_softmax(dim=-1)
        nll = -log_p.gather(1, positive.unsqueeze(1)).squeeze(1)
        uniform = -log_p.masked_fill(~valid, 0.0).sum(dim=-1) / valid.sum(dim=-1).clamp(min=1)
        return (1.0 - self.smoothing) * nll + self.smoothing * uniform
