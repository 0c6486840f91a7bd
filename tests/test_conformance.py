"""Every registered attention, scorer and encoder — built-in or from an installed plugin —
passes attnrec.testing's conformance checks."""

from __future__ import annotations

import pytest

from attnrec import get_registry
from attnrec.data import SyntheticDataModule
from attnrec.testing import (
    STANDARD_KEYS,
    check_attention,
    check_data_module,
    check_item_encoder,
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


def test_bundled_data_conforms() -> None:
    check_data_module(SyntheticDataModule(num_users=100, num_items=200, max_len=10))


def test_fixtures_give_fresh_registry(attnrec_registry, attnrec_catalog) -> None:
    assert "MultiHeadAttention" in attnrec_registry.names("attentions")
    assert attnrec_catalog.num_items == 30
