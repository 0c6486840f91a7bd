"""The hook contract between attnrec and its plugins.

Every hook receives a ``register(cls, name=None)`` callable (the pattern of simonw/llm's
``register_models``), one hook per interface, so a plugin implements only the hooks for what it
brings.  ``register`` checks that ``cls`` subclasses the interface of the hook and that its name
is free; the public name of a component is ``cls.__name__`` (what a config can type), and
``name`` is only a display name that ``attnrec plugins`` shows next to it.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "attnrec"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., Any]


@hookspec
def register_data(register: Register) -> None:
    """Register :class:`~attnrec.interfaces.RecDataModule` subclasses (data sets and formats)."""


@hookspec
def register_encoders(register: Register) -> None:
    """Register :class:`~attnrec.interfaces.ItemEncoder` and ``UserEncoder`` subclasses."""


@hookspec
def register_attentions(register: Register) -> None:
    """Register :class:`~attnrec.interfaces.Attention` subclasses."""


@hookspec
def register_scorers(register: Register) -> None:
    """Register :class:`~attnrec.interfaces.Scorer` subclasses."""


@hookspec
def register_losses(register: Register) -> None:
    """Register training objectives: :class:`~attnrec.interfaces.Loss` subclasses."""


@hookspec
def register_recommenders(register: Register) -> None:
    """Register ready-made compositions: :class:`~attnrec.model.Recommender` subclasses."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register per-list ranking metrics: :class:`~attnrec.interfaces.RankingMetric` subclasses."""
