"""attnrec-plugin-example: registers its components through attnrec's public hooks only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import attnrec

from .attention import ALiBiAttention
from .loss import LabelSmoothingLoss
from .scorer import LearnedTemperatureScorer

CONFIG = Path(__file__).parent / "configs" / "alibi_sasrec.yaml"
"""A ready-to-run config that names this plugin's components by short class name."""

__all__ = ["CONFIG", "ALiBiAttention", "LabelSmoothingLoss", "LearnedTemperatureScorer"]


@attnrec.hookimpl
def register_attentions(register: Callable[..., Any]) -> None:
    register(ALiBiAttention)


@attnrec.hookimpl
def register_scorers(register: Callable[..., Any]) -> None:
    register(LearnedTemperatureScorer, name="cosine with learned temperature")


@attnrec.hookimpl
def register_losses(register: Callable[..., Any]) -> None:
    register(LabelSmoothingLoss, name="softmax with label smoothing over valid candidates")
