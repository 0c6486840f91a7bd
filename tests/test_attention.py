"""The built-in attentions keep the contract: no NaN on fully masked rows, weights that explain."""

from __future__ import annotations

import pytest
import torch

from attnrec.attention import AdditiveAttention, MultiHeadAttention, TargetAttention
from attnrec.interfaces import Attention

B, LQ, LK, D = 3, 4, 6, 8


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, n, D, generator=gen) for n in (LQ, LK, LK))  # type: ignore[return-value]


def _mask() -> torch.Tensor:
    """[B, 1, LQ, LK]: list 0 has query row 1 fully masked; list 2 masks its first three keys."""
    mask = torch.ones(B, 1, LQ, LK, dtype=torch.bool)
    mask[0, 0, 1] = False
    mask[2, :, :, :3] = False
    return mask


ATTENTIONS = {
    "multihead": lambda: MultiHeadAttention(D, num_heads=2),
    "additive": lambda: AdditiveAttention(D),
    "target-softmax": lambda: TargetAttention(D, hidden=(16,), normalize="softmax"),
    "target-none": lambda: TargetAttention(D, hidden=(16,)),
    "target-sigmoid": lambda: TargetAttention(D, hidden=(16,), normalize="sigmoid"),
}
SOFTMAX = {"multihead", "additive", "target-softmax"}


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_fully_masked_row_gives_zeros_and_masked_keys_get_no_weight(name: str) -> None:
    torch.manual_seed(0)
    attention: Attention = ATTENTIONS[name]().eval()
    q, k, v = _inputs()
    mask = _mask()
    values, weights = attention(q, k, v, mask=mask, need_weights=True)
    assert values.shape == (B, LQ, D)
    assert torch.isfinite(values).all()
    assert weights is not None and torch.isfinite(weights).all()
    heads = weights.shape[1]
    assert weights.shape == (B, heads, LQ, LK)
    assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()
    assert (weights[0, :, 1] == 0).all()
    assert (values[0, 1] == 0).all()
    if name in SOFTMAX:
        sums = weights.sum(-1)
        sums[0, :, 1] += 1.0  # the empty row sums to 0
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    # a masked key's value cannot leak into the output
    v2 = v.clone()
    v2[2, :3] += 100.0
    assert torch.allclose(attention(q, k, v2, mask=mask).values, values, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_weights_are_only_returned_when_asked(name: str) -> None:
    attention = ATTENTIONS[name]().eval()
    q, k, v = _inputs(1)
    assert attention(q, k, v).weights is None
    assert attention(q, k, v, need_weights=True).weights is not None


def test_fused_path_equals_explicit_path() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(D, num_heads=2, dropout=0.3).eval()  # dropout is off in eval mode
    q, k, v = _inputs(2)
    causal = torch.ones(LQ, LK, dtype=torch.bool).tril()
    for mask in (None, _mask(), _mask() & causal, causal):
        fused = attention(q, k, v, mask=mask, need_weights=False)
        explicit = attention(q, k, v, mask=mask, need_weights=True)
        assert fused.weights is None
        assert torch.allclose(fused.values, explicit.values, atol=1e-6)


def test_per_head_masks_fused_equals_explicit() -> None:
    """A row empty in one head only: that head contributes nothing on both paths."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(D, num_heads=2).eval()
    q, k, v = _inputs(5)
    mask = torch.ones(B, 2, LQ, LK, dtype=torch.bool)
    mask[0, 1, 2] = False
    mask[1, 0, :, 4:] = False
    fused = attention(q, k, v, mask=mask).values
    explicit = attention(q, k, v, mask=mask, need_weights=True)
    assert torch.allclose(fused, explicit.values, atol=1e-6)
    assert (explicit.weights[0, 1, 2] == 0).all()


def test_no_nan_gradients_through_a_fully_masked_row() -> None:
    attention = MultiHeadAttention(D, num_heads=2)
    q, k, v = (x.requires_grad_() for x in _inputs(3))
    mask = torch.zeros(B, 1, 1, LK, dtype=torch.bool)
    mask[1:, ..., 2:] = True
    attention(q, k, v, mask=mask).values.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_key_padding_mask_broadcasts(name: str) -> None:
    torch.manual_seed(0)
    attention = ATTENTIONS[name]().eval()
    q, k, v = _inputs(4)
    keys = torch.ones(B, LK, dtype=torch.bool)
    keys[0, :2] = False
    keys[1, :] = False  # every row of list 1 is empty
    short = attention(q, k, v, mask=keys[:, None, None, :], need_weights=True)
    full = attention(q, k, v, mask=keys[:, None, None, :].expand(B, 1, LQ, LK), need_weights=True)
    assert torch.allclose(short.values, full.values, atol=1e-6)
    assert torch.allclose(short.weights, full.weights, atol=1e-6)
    assert torch.isfinite(short.values).all()
    assert (short.weights[1] == 0).all()
    assert (short.weights[0, ..., :2] == 0).all()


def test_multihead_rejects_indivisible_width() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(10, num_heads=3)


def test_target_attention_without_normalisation_keeps_intensity() -> None:
    """DIN's raw weights: doubling the number of identical behaviours doubles the pooled vector."""
    torch.manual_seed(0)
    attention = TargetAttention(D, hidden=(16,)).eval()
    item = torch.randn(1, 1, D)
    target = torch.randn(1, 1, D)
    one = attention(target, item.expand(1, 2, D), item.expand(1, 2, D), mask=torch.tensor([[[[True, False]]]])).values
    two = attention(target, item.expand(1, 2, D), item.expand(1, 2, D)).values
    assert torch.allclose(two, 2 * one, atol=1e-6)
