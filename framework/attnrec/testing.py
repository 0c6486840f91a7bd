"""Conformance checks for plugin authors.

Call the ``check_*`` functions from your own tests, or enable the fixtures with
``pytest_plugins = ["attnrec.testing"]``. Each check raises ``AssertionError`` with a message
that says which convention a component broke.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from .interfaces import Attention, Batch, ItemCatalog, ItemEncoder, Loss, RecDataModule, Scorer, UserEncoder


STANDARD_KEYS = frozenset({"history", "user"})
"""The batch keys every data module provides; encoders needing more are checked by their plugin."""


def tiny_catalog(num_items: int = 30, num_users: int = 10, seed: int = 0) -> ItemCatalog:
    """A catalog with an integer ``category`` feature and a training graph, for building
    components in tests."""
    generator = torch.Generator().manual_seed(seed)
    popularity = torch.randint(0, 50, (num_items + 1,), generator=generator).float()
    popularity[0] = 0
    category = torch.randint(1, 5, (num_items + 1,), generator=generator)
    category[0] = 0
    return ItemCatalog(
        num_items=num_items,
        popularity=popularity,
        titles=[""] + [f"item {i}" for i in range(1, num_items + 1)],
        features={"category": category},
        num_users=num_users,
        train_edges=torch.stack(
            [torch.randint(1, num_users + 1, (4 * num_users,), generator=generator),
             torch.randint(1, num_items + 1, (4 * num_users,), generator=generator)]
        ),
    )


def left_padded_history(batch: int = 4, length: int = 8, num_items: int = 30, seed: int = 0) -> Tensor:
    """Histories of lengths 1..length, left-padded with 0 (the conventional shape)."""
    generator = torch.Generator().manual_seed(seed)
    history = torch.randint(1, num_items + 1, (batch, length), generator=generator)
    for row in range(batch):
        keep = 1 + row * (length - 1) // max(batch - 1, 1)
        history[row, : length - keep] = 0
    return history


def check_attention(factory: Callable[[int], Attention], dim: int = 16) -> None:
    """Shapes, the boolean mask convention (True = may attend), weights on request, and no NaN
    for a fully masked query row (which must come back as zeros)."""
    torch.manual_seed(0)
    attention = factory(dim).eval()
    assert isinstance(attention, Attention), f"{attention!r} is not an attnrec Attention"
    b, lq, lk = 3, 4, 5
    query, key, value = torch.randn(b, lq, dim), torch.randn(b, lk, dim), torch.randn(b, lk, dim)
    mask = torch.ones(b, 1, lq, lk, dtype=torch.bool)
    mask[0, :, :, :2] = False  # key padding
    mask[1, :, 2, :] = False  # one query row with nothing to attend to
    with torch.no_grad():
        values, weights = attention(query, key, value, mask=mask, need_weights=True)
        plain, none = attention(query, key, value, mask=mask)
    name = type(attention).__name__
    assert values.shape == (b, lq, dim), f"{name}: values shape {tuple(values.shape)}, expected {(b, lq, dim)}"
    assert none is None, f"{name}: weights must be None unless need_weights=True"
    assert weights is not None and weights.dim() == 4, f"{name}: need_weights=True must return [B, H, Lq, Lk] weights"
    assert weights.shape[0] == b and weights.shape[2:] == (lq, lk), f"{name}: weights shape {tuple(weights.shape)}"
    assert not torch.isnan(values).any() and not torch.isnan(weights).any(), f"{name}: NaN for a fully masked row"
    assert torch.allclose(values[1, 2], torch.zeros(dim), atol=1e-6), f"{name}: a fully masked query row must give zeros"
    assert torch.all(weights[0, :, :, :2] == 0), f"{name}: masked keys must get zero weight"
    assert torch.allclose(plain, values, atol=1e-5), f"{name}: outputs differ with and without need_weights"


def check_scorer(factory: Callable[[int], Scorer], dim: int = 16) -> None:
    """``[..., D] x [N, D] -> [..., N]`` and ``[..., D] x [..., C, D] -> [..., C]``, consistently."""
    torch.manual_seed(0)
    scorer = factory(dim).eval()
    name = type(scorer).__name__
    users, items = torch.randn(3, dim), torch.randn(7, dim)
    with torch.no_grad():
        shared = scorer(users, items)
        per_row = scorer(users, items[torch.tensor([[0, 3], [1, 4], [6, 2]])])
        positions = scorer(torch.randn(3, 5, dim), items)
    assert shared.shape == (3, 7), f"{name}: [B, D] x [N, D] gave {tuple(shared.shape)}, expected (3, 7)"
    assert per_row.shape == (3, 2), f"{name}: [B, D] x [B, C, D] gave {tuple(per_row.shape)}, expected (3, 2)"
    assert positions.shape == (3, 5, 7), f"{name}: [B, L, D] x [N, D] gave {tuple(positions.shape)}"
    expected = shared.gather(1, torch.tensor([[0, 3], [1, 4], [6, 2]]))
    assert torch.allclose(per_row, expected, atol=1e-5), f"{name}: per-row and shared scores disagree"


def check_item_encoder(factory: Callable[[ItemCatalog, int], ItemEncoder], catalog: ItemCatalog | None = None, dim: int = 16) -> None:
    """Vectors for any id shape, and ``all_items()`` consistent with ``forward``."""
    catalog = catalog or tiny_catalog()
    encoder = factory(catalog, dim).eval()
    name = type(encoder).__name__
    ids = torch.randint(1, catalog.num_items + 1, (2, 3))
    with torch.no_grad():
        vectors = encoder.forward(ids)  # not encoder(ids): in inference that is answered from all_items()
        everything = encoder.all_items()
        cached = encoder(ids)
    assert vectors.shape == (2, 3, dim), f"{name}: ids [2, 3] gave {tuple(vectors.shape)}, expected (2, 3, {dim})"
    assert everything.shape == (catalog.num_items + 1, dim), f"{name}: all_items() must be [num_items + 1, dim]"
    assert torch.allclose(everything[ids], vectors, atol=1e-5), f"{name}: all_items() disagrees with forward()"
    assert torch.allclose(cached, vectors, atol=1e-5), f"{name}: the inference cache disagrees with forward()"


def check_user_encoder(factory: Callable[[int], UserEncoder], item_encoder: ItemEncoder | None = None, dim: int = 16) -> None:
    """``[B, D]`` (and ``[B, L, D]`` for all-position encoders) with no NaN under left padding;
    an all-position encoder must also be causal (see :func:`check_causal`)."""
    from .encoders import IdItemEncoder

    torch.manual_seed(0)
    catalog = tiny_catalog()
    item_encoder = item_encoder or IdItemEncoder(catalog, dim)
    encoder = factory(dim).eval()
    name = type(encoder).__name__
    history = left_padded_history(num_items=catalog.num_items)
    batch = {"history": history, "user": torch.arange(1, history.shape[0] + 1)}
    with torch.no_grad():
        out = encoder(batch, item_encoder)
        explained = encoder(batch, item_encoder, need_weights=True)
    assert out.vectors.shape == (history.shape[0], dim), f"{name}: vectors {tuple(out.vectors.shape)}, expected [B, D]"
    assert not torch.isnan(out.vectors).any(), f"{name}: NaN user vectors for left-padded short histories"
    if any(isinstance(module, Attention) for module in encoder.modules()):
        assert explained.weights, f"{name}: it owns an Attention, so need_weights=True must return its weights"
    if encoder.all_positions:
        with torch.no_grad():
            every = encoder(batch, item_encoder, all_positions=True).vectors
        assert every.shape == (*history.shape, dim), f"{name}: all_positions=True must give [B, L, D]"
        assert torch.allclose(every[:, -1], out.vectors, atol=1e-5), f"{name}: last position differs from the user vector"
        check_causal(encoder, batch, item_encoder)


def check_causal(encoder: UserEncoder, batch: Batch, item_encoder: ItemEncoder, atol: float = 1e-5) -> None:
    """The vector at history position ``i`` must not depend on items after ``i``.

    An ``all_positions = True`` encoder trains position ``i`` to predict item ``i + 1``; if that
    vector can see item ``i + 1`` (a bidirectional encoder, one that reads the history reversed
    or shifted), training leaks the target and evaluation is silently wrong. So each real item
    is replaced by another in turn, and every earlier real item's vector must stay the same.
    """
    name = type(encoder).__name__
    history = batch["history"]
    present = history != 0
    num_items = int(history.max())
    with torch.no_grad():
        before = encoder(batch, item_encoder, all_positions=True).vectors
        for later in range(1, history.shape[1]):
            changed = history.clone()
            changed[:, later] = torch.where(present[:, later], history[:, later] % num_items + 1, 0)
            after = encoder({**batch, "history": changed}, item_encoder, all_positions=True).vectors
            moved = ((after[:, :later] - before[:, :later]).abs().amax(dim=-1) > atol) & present[:, :later]
            if moved.any():
                row, earlier = (int(i) for i in moved.nonzero()[0])
                raise AssertionError(
                    f"{name}: not causal: changing the history item at position {later} changed the vector at "
                    f"earlier position {earlier} (row {row}). all_positions = True trains position i to predict "
                    "item i + 1, so position i may read only items 0..i; a bidirectional encoder, or one that "
                    "reads the history reversed, must set all_positions = False"
                )


def check_loss(factory: Callable[[], Loss], num_items: int = 30) -> None:
    """The :class:`~attnrec.interfaces.Loss` contract, on the logits of its declared
    ``candidates`` kind (``"catalog"``: ``[M, num_items + 1]``, column = item id, padding column
    masked; ``"sampled"``: the positive in column 0, then negatives): built with no arguments
    (the CLI names it by class alone) and bound to the catalogue first, as the model does; one
    finite loss per example that does not depend on the other rows (the model weights and
    reduces); finite gradients; masked candidates ignored (they are padding, seen items or
    accidental hits of the positive); a higher positive logit gives a lower loss. Rows whose
    negatives are all masked (an accidental hit with one negative) must stay finite."""
    try:
        loss = factory()
    except TypeError as error:
        raise AssertionError(f"{factory!r}: a Loss must be constructible with no arguments: {error}") from error
    name = type(loss).__name__
    assert isinstance(loss, Loss), f"{loss!r} is not an attnrec Loss"
    assert loss.candidates in ("catalog", "sampled"), f"{name}: candidates={loss.candidates!r}, not 'catalog' or 'sampled'"
    assert isinstance(loss.log_q_correction, bool), f"{name}: log_q_correction must be a bool"
    loss.bind(num_items)
    generator = torch.Generator().manual_seed(0)
    m = 6
    if loss.candidates == "catalog":
        positive = torch.randint(1, num_items + 1, (m,), generator=generator)
        mask = torch.rand(m, num_items + 1, generator=generator) > 0.3  # seen items masked
        mask[:, 0] = False  # padding
    else:
        positive = torch.zeros(m, dtype=torch.long)
        mask = torch.rand(m, 8, generator=generator) > 0.3  # accidental hits masked
    rows = torch.arange(m)
    mask[rows, positive] = True
    mask[-1] = False
    mask[-1, positive[-1]] = True  # nothing but the positive left
    logits = torch.randn(mask.shape, generator=generator).requires_grad_()

    out = loss(logits, positive, mask)
    assert out.shape == (m,), f"{name}: logits {tuple(mask.shape)} gave {tuple(out.shape)}, expected one loss per example"
    assert torch.isfinite(out).all(), f"{name}: non-finite loss {out.tolist()} (the last row has only its positive left)"
    out.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all(), f"{name}: non-finite gradients"
    unmasked = loss(logits.detach(), positive, None)
    assert unmasked.shape == (m,) and torch.isfinite(unmasked).all(), f"{name}: mask=None (all valid) must work too"

    logits = logits.detach()
    with torch.no_grad():
        alone = loss(logits[1:], positive[1:], mask[1:])
        hidden = loss(logits.masked_fill(~mask, 30.0), positive, mask)
        raised = loss(logits.index_put((rows, positive), logits[rows, positive] + 2.0), positive, mask)
    out = out.detach()
    assert torch.allclose(alone, out[1:], atol=1e-5), f"{name}: an example's loss depends on the other rows of the batch"
    assert torch.allclose(hidden, out, atol=1e-4), f"{name}: the logits of masked candidates changed the loss"
    competed = mask.sum(dim=1) > 1  # rows with a valid negative
    assert torch.all(raised[competed] < out[competed]), f"{name}: raising the positive's logit must lower its loss"


def check_data_module(datamodule: RecDataModule) -> None:
    """Batches follow the conventions: ids in range, 0 = padding, left-padded histories, and a
    target (or a relevant candidate) in every evaluation list."""
    datamodule.setup("fit")
    n = datamodule.num_items
    catalog = datamodule.catalog
    assert catalog.num_items == n, "catalog.num_items differs from num_items"
    train = next(iter(datamodule.train_dataloader()))
    history = train["history"]
    assert history.min() >= 0 and history.max() <= n, "training history holds ids outside 0..num_items"
    started = (history != 0).long().cummax(dim=1).values.bool()
    assert torch.all((history != 0) == started), "histories must be left-padded (no padding after the first item)"
    assert "target" in train, "training batches need a 'target'"
    val = next(iter(datamodule.val_dataloader()))
    if "candidates" in val:
        assert val["candidates"].shape == val["labels"].shape, "candidates and labels must have the same shape"
        assert bool((val["labels"].sum(1) > 0).all()), "every candidate list needs a relevant item"
    else:
        targets = val["targets"]
        assert bool(((targets != 0).sum(1) > 0).all()), "every evaluation list needs a target"
        assert targets.max() <= n, "evaluation targets hold ids outside 1..num_items"


@pytest.fixture
def attnrec_catalog() -> ItemCatalog:
    """A tiny ItemCatalog (30 items, a ``category`` feature)."""
    return tiny_catalog()


@pytest.fixture
def attnrec_registry(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh plugin registry for the test, restored afterwards."""
    from . import plugins

    monkeypatch.setattr(plugins, "_REGISTRY", None)
    return plugins.get_registry()
