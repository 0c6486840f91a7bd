"""The plugin's own tests, run against the installed package (``pip install -e .[test]``,
then ``pytest``): attnrec's conformance checks on every component, that the entry point
registers them, and the behaviour each component exists for."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import attnrec_example_plugin as plugin
from attnrec.losses import CrossEntropyLoss
from attnrec.testing import check_attention, check_loss, check_scorer

pytest_plugins = ["attnrec.testing"]  # fixtures: attnrec_registry, attnrec_catalog


# ----------------------------------------------------------------- conformance
@pytest.mark.parametrize("kwargs", [{}, {"num_heads": 4, "learn_slopes": True}], ids=["default", "learned"])
def test_attention_conforms(kwargs: dict) -> None:
    check_attention(functools.partial(plugin.ALiBiAttention, **kwargs))


def test_scorer_conforms() -> None:
    check_scorer(plugin.LearnedTemperatureScorer)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_loss_conforms(smoothing: float) -> None:
    check_loss(functools.partial(plugin.LabelSmoothingLoss, smoothing=smoothing))


def test_the_entry_point_registers_every_component(attnrec_registry) -> None:
    assert "example" in attnrec_registry.plugins, "the plugin is not installed: pip install -e ."
    registered = {(c.kind, c.name) for c in attnrec_registry.plugins["example"].components}
    assert registered == {
        ("attentions", "ALiBiAttention"), ("scorers", "LearnedTemperatureScorer"), ("losses", "LabelSmoothingLoss"),
    }  # fmt: skip
    assert attnrec_registry.get("losses", "LabelSmoothingLoss") is plugin.LabelSmoothingLoss


# ------------------------------------------------------------------- behaviour
def test_alibi_attention_prefers_recent_keys_and_can_learn_its_slopes() -> None:
    attention = plugin.ALiBiAttention(8, num_heads=4, learn_slopes=True).eval()
    same = torch.randn(1, 1, 8).expand(1, 6, 8)  # identical keys: only the recency bias differs
    weights = attention(same[:, -1:], same, same, need_weights=True).weights[0, :, 0]  # [H, Lk]
    assert torch.all(weights[:, 1:] > weights[:, :-1]), "every head must weigh the most recent key highest"
    assert torch.all(weights[0, -1] > weights[-1, -1]), "the first head (steepest slope) must be the most local"
    mask = torch.tensor([False, False, True, True, True, False])[None, None, None, :]
    masked = attention(same[:, -1:], same, same, mask=mask, need_weights=True).weights[0, :, 0]
    assert torch.all(masked[:, [0, 1, 5]] == 0) and torch.allclose(masked.sum(-1), torch.ones(4))
    values, _ = attention(torch.randn(2, 6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8))
    values.sum().backward()
    assert attention.log_slopes.grad is not None and attention.log_slopes.grad.abs().sum() > 0
    fixed = plugin.ALiBiAttention(8, num_heads=4)
    assert "log_slopes" not in dict(fixed.named_parameters()) and "log_slopes" in dict(fixed.named_buffers())


def test_learned_temperature_scorer_is_scale_invariant_and_learns_its_temperature() -> None:
    scorer = plugin.LearnedTemperatureScorer(8, init_temperature=0.2)
    assert scorer.temperature == pytest.approx(0.2)
    users, items = torch.randn(3, 8), torch.randn(5, 8)
    scores = scorer(users, items)
    assert torch.allclose(scorer(7.0 * users, 0.5 * items), scores, atol=1e-5)
    assert scores.abs().max() <= 1 / 0.2 + 1e-4
    scores.logsumexp(-1).sum().backward()
    assert scorer.log_scale.grad is not None and scorer.log_scale.grad != 0
    with pytest.raises(ValueError, match="init_temperature must be positive"):
        plugin.LearnedTemperatureScorer(8, init_temperature=0.0)


def test_label_smoothing_stays_finite_with_masked_candidates_where_torch_does_not() -> None:
    logits, positive = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[:, 0] = False  # the padding column, as the model masks it
    ours = plugin.LabelSmoothingLoss(0.1)(logits, positive, mask)
    torchs = F.cross_entropy(logits.masked_fill(~mask, float("-inf")), positive, label_smoothing=0.1, reduction="none")
    assert torch.isfinite(ours).all() and not torch.isfinite(torchs).any()
    # without masked columns the two agree: the same objective
    unmasked = F.cross_entropy(logits, positive, label_smoothing=0.1, reduction="none")
    assert torch.allclose(plugin.LabelSmoothingLoss(0.1)(logits, positive), unmasked, atol=1e-5)
    assert torch.allclose(plugin.LabelSmoothingLoss(0.0)(logits, positive, mask), CrossEntropyLoss()(logits, positive, mask))


def test_label_smoothing_stops_rewarding_overconfidence() -> None:
    logits = torch.zeros(31, 5)
    logits[:, 1] = torch.linspace(0.0, 15.0, 31)  # the positive, ahead of four tied negatives
    positive = torch.ones(31, dtype=torch.long)
    smoothed = plugin.LabelSmoothingLoss(0.1)(logits, positive)
    plain = CrossEntropyLoss()(logits, positive)
    assert torch.all(plain[1:] < plain[:-1]), "cross-entropy keeps rewarding a larger margin"
    best = int(smoothed.argmin())
    assert 0 < best < 30 and smoothed[-1] > smoothed[best] + 0.5, "smoothing has a finite best margin"
    with pytest.raises(ValueError, match=r"smoothing=1.0 must be in \[0, 1\)"):
        plugin.LabelSmoothingLoss(1.0)
