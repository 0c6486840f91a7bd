"""A plugin whose scorer is called like a built-in one: rejected for the name clash."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

import attnrec


class DotScorer(attnrec.Scorer):
    """Clashes with ``attnrec.scorers.DotScorer``; the registered built-in must keep the name."""

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return 2 * users @ items.T


@attnrec.hookimpl
def register_scorers(register: Callable[..., Any]) -> None:
    register(DotScorer)
