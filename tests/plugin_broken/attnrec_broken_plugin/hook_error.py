"""A plugin whose hook registers a valid component and then raises."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

import attnrec


class HalfRegisteredScorer(attnrec.Scorer):
    """Registered just before the hook fails; attnrec must not keep it."""

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return users @ items.T


@attnrec.hookimpl
def register_scorers(register: Callable[..., Any]) -> None:
    register(HalfRegisteredScorer)
    raise RuntimeError("broken_hook: the scorer registry of this plugin is corrupt")
