"""The built-in losses' values and gradients against their textbook forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnrec.losses import CrossEntropyLoss, SampledSoftmaxLoss


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), SampledSoftmaxLoss()])
@pytest.mark.parametrize("masked", [False, True])
def test_softmax_cross_entropy_equals_torch_in_value_and_gradient(loss, masked: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 40, generator=generator, dtype=torch.float64)).requires_grad_()
    positive = torch.randint(0, 40, (7,), generator=generator)
    mask = None
    if masked:
        mask = torch.rand(7, 40, generator=generator) > 0.4
        mask[torch.arange(7), positive] = True
        mask[-1] = False
        mask[-1, positive[-1]] = True  # nothing but the positive left: loss 0, gradient 0
    weights = torch.rand(7, generator=generator, dtype=torch.float64)

    got = loss(logits, positive, mask)
    (got * weights).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    reference = F.cross_entropy(logits if mask is None else logits.masked_fill(~mask, float("-inf")), positive,
                                reduction="none")  # fmt: skip
    (reference * weights).sum().backward()
    assert torch.allclose(got.double(), reference, atol=1e-5)
    assert torch.allclose(ours, logits.grad, atol=1e-6)
    if masked:
        assert got[-1] == 0 and ours[-1].abs().sum() == 0
        assert (ours[~mask] == 0).all()  # a masked candidate gets no gradient


def test_softmax_cross_entropy_under_vmap_grad_equals_the_loop() -> None:
    """Differentially private training takes per-example gradients with torch.func."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, 12, generator=generator)
    positive = torch.randint(1, 12, (5, 3), generator=generator)
    mask = torch.ones(12, dtype=torch.bool)
    mask[0] = False

    def one(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return CrossEntropyLoss()(x, p, mask.expand_as(x)).mean()

    batched = torch.func.vmap(torch.func.grad(one))(logits, positive)
    for i in range(5):
        assert torch.allclose(batched[i], torch.func.grad(one)(logits[i], positive[i]), atol=1e-6)


def test_catalog_cross_entropy_equals_the_logits_form_in_value_and_gradient(monkeypatch) -> None:
    """The model's fused catalogue softmax (chunks of rows, no [M, N] logits) against the loss
    on materialised logits; chunks of 8 rows split these 21 examples unevenly."""
    import attnrec.losses
    from attnrec.losses import catalog_cross_entropy

    monkeypatch.setattr(attnrec.losses, "catalog_chunk", lambda users, items: 8)

    generator = torch.Generator().manual_seed(2)
    users = torch.randn(21, 6, generator=generator, dtype=torch.float64).requires_grad_()
    items = torch.randn(40, 6, generator=generator, dtype=torch.float64).requires_grad_()
    positive = torch.randint(1, 40, (21,), generator=generator)
    allowed = torch.rand(40, generator=generator) > 0.3
    allowed[positive] = True
    allowed[0] = False
    weights = torch.rand(21, generator=generator, dtype=torch.float64)

    fused = catalog_cross_entropy(users, items, positive, allowed)
    (fused * weights).sum().backward()
    grads = users.grad.clone(), items.grad.clone()
    users.grad = items.grad = None
    logits = users.float() @ items.float().T
    plain = CrossEntropyLoss()(logits, positive, allowed.expand_as(logits))
    (plain * weights.float()).sum().backward()
    assert torch.allclose(fused, plain, atol=1e-5)
    assert torch.allclose(grads[0], users.grad, atol=1e-5) and torch.allclose(grads[1], items.grad, atol=1e-5)
    assert (grads[1][~allowed] == 0).all()  # an excluded item gets nothing from the softmax


def test_catalog_cross_entropy_under_bf16_autocast_has_the_float32_gradients() -> None:
    """The backward recomputes the logits: under autocast it once did so in float32 against a
    normaliser from bfloat16 logits, and the gradients were ~10% off."""
    from attnrec.losses import catalog_cross_entropy

    generator = torch.Generator().manual_seed(3)
    users = torch.randn(64, 32, generator=generator).requires_grad_()
    items = torch.randn(500, 32, generator=generator).requires_grad_()
    positive = torch.randint(1, 500, (64,), generator=generator)
    allowed = torch.ones(500, dtype=torch.bool)
    allowed[0] = False

    catalog_cross_entropy(users, items, positive, allowed).mean().backward()
    exact = users.grad.clone(), items.grad.clone()
    users.grad = items.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = catalog_cross_entropy(users, items, positive, allowed).mean()
    loss.backward()
    assert torch.allclose(users.grad, exact[0], atol=1e-5) and torch.allclose(items.grad, exact[1], atol=1e-5)
