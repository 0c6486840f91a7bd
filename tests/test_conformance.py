"""Every registered attention, scorer, encoder and loss — built-in or from an installed plugin —
passes attnrec.testing's conformance checks, and the checks catch the breaches they exist for."""

from __future__ import annotations

import functools
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnrec import Batch, ItemEncoder, Loss, UserEncoding, get_registry
from attnrec.data import SyntheticDataModule
from attnrec.encoders import TransformerUserEncoder
from attnrec.losses import CrossEntropyLoss
from attnrec.testing import (
    STANDARD_KEYS,
    check_attention,
    check_data_module,
    check_item_encoder,
    check_loss,
    check_scorer,
    check_user_encoder,
    tiny_catalog,
)

pytest_plugins = ["attnrec.testing"]
REGISTRY = get_registry()


def _components(kind: str, base: str | None = None) -> list:
    out = []
    for name in REGISTRY.names(kind):
        cls = REGISTRY.get(kind, name)
        if base is None or any(b.__name__ == base for b in cls.__mro__):
            out.append(pytest.param(cls, id=name))
    return out


@pytest.mark.parametrize("cls", _components("attentions"))
def test_attention_conforms(cls: type) -> None:
    check_attention(cls)


@pytest.mark.parametrize("cls", _components("scorers"))
def test_scorer_conforms(cls: type) -> None:
    check_scorer(cls)


@pytest.mark.parametrize("cls", _components("encoders", "UserEncoder"))
def test_user_encoder_conforms(cls: type) -> None:
    extra = set(cls.required_keys) - STANDARD_KEYS
    if extra:  # target-aware encoders: their plugin's tests build batches with these keys
        pytest.skip(f"{cls.__name__} declares batch keys {sorted(extra)} beyond the standard ones")
    item_encoder = None
    if cls.item_encoders:  # pair it with the first item encoder it declares
        item_encoder = REGISTRY.get("encoders", cls.item_encoders[0])(tiny_catalog(), 16)
    check_user_encoder(cls, item_encoder=item_encoder)


@pytest.mark.parametrize("cls", _components("encoders", "ItemEncoder"))
def test_item_encoder_conforms(cls: type) -> None:
    catalog = tiny_catalog()
    missing = {f for f in cls.required_features if f not in catalog.features and f != "train_edges"}
    if missing:  # domain features (title tokens, visual vectors ...): covered by the plugin's tests
        pytest.skip(f"{cls.__name__} declares catalog features {sorted(missing)} the generic catalog lacks")
    check_item_encoder(cls, catalog)


@pytest.mark.parametrize("cls", _components("losses"))
def test_loss_conforms(cls: type) -> None:
    check_loss(cls)


def test_bundled_data_conforms() -> None:
    check_data_module(SyntheticDataModule(num_users=100, num_items=200, max_len=10))


def test_fixtures_give_fresh_registry(attnrec_registry, attnrec_catalog) -> None:
    assert "MultiHeadAttention" in attnrec_registry.names("attentions")
    assert attnrec_catalog.num_items == 30


# ------------------------------------------------------- the checks catch breaches
class ReversedHistoryEncoder(TransformerUserEncoder):
    """Reads the history newest first, so its "position i" has seen every later item."""

    def forward(
        self, batch: Batch, item_encoder: ItemEncoder, all_positions: bool = False, need_weights: bool = False
    ) -> UserEncoding:
        return super().forward({**batch, "history": batch["history"].flip(1)}, item_encoder, all_positions, need_weights)


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(functools.partial(TransformerUserEncoder, causal=False), id="bidirectional"),
        pytest.param(ReversedHistoryEncoder, id="reversed"),
    ],
)
def test_an_all_positions_encoder_that_sees_later_items_fails(factory: Callable[[int], TransformerUserEncoder]) -> None:
    with pytest.raises(AssertionError, match=r"not causal: changing the history item at position \d+ changed .* earlier"):
        check_user_encoder(factory)


def test_the_causal_transformer_passes_with_several_layers() -> None:
    check_user_encoder(functools.partial(TransformerUserEncoder, num_layers=3))


class ScalarLoss(CrossEntropyLoss):
    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        return super().forward(logits, positive, mask).mean()


class UnmaskedLoss(CrossEntropyLoss):
    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        return super().forward(logits, positive, None)


class BatchNormalisedLoss(CrossEntropyLoss):
    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        losses = super().forward(logits, positive, mask)
        return losses / losses.detach().mean()


class NegatedLoss(CrossEntropyLoss):
    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        return -super().forward(logits, positive, mask)


class NaNWithoutNegativesLoss(Loss):
    candidates = "sampled"

    def forward(self, logits: Tensor, positive: Tensor, mask: Tensor | None = None) -> Tensor:
        negatives = mask[:, 1:] if mask is not None else torch.ones_like(logits[:, 1:], dtype=torch.bool)
        return (F.softplus(logits[:, 1:] - logits[:, :1]) * negatives).sum(1) / negatives.sum(1)


class LossWithRequiredArgument(CrossEntropyLoss):
    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = margin


@pytest.mark.parametrize(
    "cls, message",
    [
        (ScalarLoss, "expected one loss per example"),
        (UnmaskedLoss, "masked candidates changed the loss"),
        (BatchNormalisedLoss, "depends on the other rows"),
        (NegatedLoss, "raising the positive's logit must lower its loss"),
        (NaNWithoutNegativesLoss, "non-finite loss .* only its positive left"),
        (LossWithRequiredArgument, "constructible with no arguments"),
    ],
)
def test_a_loss_breaking_the_contract_fails(cls: type[Loss], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_loss(cls)
