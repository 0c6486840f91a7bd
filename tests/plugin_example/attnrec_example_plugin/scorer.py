from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attnrec


class LearnedTemperatureScorer(attnrec.Scorer):
    """Cosine similarity times a learned scale (CLIP's logit scale).

    A softmax over cosine scores is very sensitive to its temperature; learning it (in log
    space, capped at ``max_scale`` as CLIP does, against runaway sharpening) removes a
    hyper-parameter that otherwise needs a sweep per data set.
    """

    def __init__(self, dim: int | None = None, init_temperature: float = 0.1, max_scale: float = 100.0) -> None:
        super().__init__(dim)
        if init_temperature <= 0:
            raise ValueError(f"LearnedTemperatureScorer: init_temperature must be positive, got {init_temperature}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.log_scale.detach().clamp(max=self.max_log_scale).exp())

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        if items.dim() == 2:  # shared catalogue [N, D]
            cosine = users @ items.T
        else:  # per-row candidates [..., C, D]
            cosine = (users.unsqueeze(-2) * items).sum(-1)
        return self.log_scale.clamp(max=self.max_log_scale).exp() * cosine
