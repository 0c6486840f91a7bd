"""The plugin registry: interface checks, clashes, isolation of broken plugins, the
environment switches, and the example third-party plugin's components.

Registry rules are tested with in-process plugin objects (fast); discovery through entry
points uses the plugin packages under tests/, pip-installed into a temporary site dir that
is put on ``sys.path`` for the test only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import Tensor

import attnrec
import attnrec.plugins
from attnrec import builtin
from attnrec.attention import AdditiveAttention, MultiHeadAttention, TargetAttention
from attnrec.plugins import PluginError, Registry, UnknownComponentError
from attnrec.scorers import DotScorer
from attnrec.testing import check_attention, check_scorer

Register = Callable[..., Any]


def plugin(**hooks: Callable[[Register], None]) -> type:
    """An in-process plugin: a class whose static methods are the given hook implementations."""
    return type("Plugin", (), {name: staticmethod(attnrec.hookimpl(fn)) for name, fn in hooks.items()})


def scorer_class(name: str) -> type:
    """A fresh Scorer subclass called ``name`` (two calls give two different classes)."""
    return type(name, (attnrec.Scorer,), {"forward": lambda self, users, items: users @ items.T})


def builtin_registry() -> Registry:
    registry = Registry()
    registry.add_plugin(builtin, name="attnrec.builtin")
    return registry


# --------------------------------------------------------------- registry rules
def test_builtins_are_registered_through_the_hooks() -> None:
    registry = builtin_registry()
    for kind in attnrec.plugins.KINDS:
        callers = getattr(registry.pm.hook, f"register_{kind}").get_hookimpls()
        assert [impl.plugin_name for impl in callers] == ["attnrec.builtin"], kind
    assert set(registry.names("attentions")) >= {"MultiHeadAttention", "AdditiveAttention", "TargetAttention"}
    assert registry.get("attentions", "TargetAttention") is TargetAttention
    assert registry.get("scorers", "DotScorer") is DotScorer
    assert {c.plugin for c in registry.plugins["attnrec.builtin"].components} == {"attnrec.builtin"}
    assert registry.plugins["attnrec.builtin"].version == attnrec.__version__


def test_get_registry_with_no_entry_points_holds_only_the_builtins(fresh_registry, monkeypatch) -> None:
    monkeypatch.setenv("ATTNREC_LOAD_PLUGINS", "")
    registry = fresh_registry()
    assert list(registry.plugins) == ["attnrec.builtin"]
    assert attnrec.get_component("attentions", "AdditiveAttention") is AdditiveAttention
    assert fresh_registry() is registry  # loaded once per process


def test_register_rejects_a_class_of_the_wrong_interface() -> None:
    registry = builtin_registry()
    wrong = plugin(register_attentions=lambda register: register(DotScorer))
    expected = r"plugin 'wrong': register_attentions got .*DotScorer.*not a subclass of attnrec\.Attention"
    with pytest.raises(TypeError, match=expected):
        registry.add_plugin(wrong, name="wrong", distribution="wrong-dist")
    not_a_class = plugin(register_scorers=lambda register: register(DotScorer(8)))
    with pytest.raises(TypeError, match="not a subclass of attnrec.Scorer"):
        registry.add_plugin(not_a_class, name="instance")
    assert "wrong" not in registry.plugins and registry.pm.get_plugin("wrong") is None


def test_name_clash_names_both_plugins_and_keeps_the_first() -> None:
    registry = builtin_registry()
    first, second = scorer_class("FancyScorer"), scorer_class("FancyScorer")
    registry.add_plugin(plugin(register_scorers=lambda register: register(first)), name="alpha")
    with pytest.raises(PluginError, match=r"'FancyScorer' from plugin 'beta' .*clashes with the one from plugin 'alpha'"):
        registry.add_plugin(plugin(register_scorers=lambda register: register(second)), name="beta")
    assert registry.get("scorers", "FancyScorer") is first
    with pytest.raises(PluginError, match=r"'MultiHeadAttention' from plugin 'copycat' .*plugin 'attnrec.builtin'"):
        registry.add_plugin(plugin(register_attentions=lambda register: register(MultiHeadAttention)), name="copycat")
    assert registry.components["attentions"]["MultiHeadAttention"].plugin == "attnrec.builtin"


def test_a_raising_hook_leaves_nothing_half_registered() -> None:
    registry = builtin_registry()
    kept = scorer_class("KeptScorer")

    def register_then_fail(register: Register) -> None:
        register(kept)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        registry.add_plugin(plugin(register_scorers=register_then_fail), name="flaky")
    assert "KeptScorer" not in registry.names("scorers")
    assert registry.pm.get_plugin("flaky") is None and "flaky" not in registry.plugins
    registry.add_plugin(plugin(register_scorers=lambda register: register(kept)), name="fixed")  # name is free again
    assert registry.get("scorers", "KeptScorer") is kept


def test_a_misspelled_hook_is_caught() -> None:
    registry = builtin_registry()
    with pytest.raises(PluginError, match=r"'typo' \(typo-dist\) implements an unknown hook.*register_atentions"):
        registry.add_plugin(plugin(register_atentions=lambda register: None), name="typo", distribution="typo-dist")
    assert registry.pm.get_plugin("typo") is None

    def register_scorers(reg: Register) -> None:  # the argument must be called `register`
        reg(DotScorer)

    with pytest.raises(PluginError, match=r"'argname' .*cannot be registered.*reg"):
        registry.add_plugin(plugin(register_scorers=register_scorers), name="argname")


def test_unknown_component_lists_the_available_ones() -> None:
    registry = builtin_registry()
    with pytest.raises(UnknownComponentError) as info:
        registry.get("scorers", "DotScorr")
    message = str(info.value)
    assert "'DotScorr'" in message and "BilinearScorer, CosineScorer, DotScorer, MLPScorer" in message
    assert "attnrec plugins" in message
    with pytest.raises(UnknownComponentError, match="kinds are data, encoders, attentions, scorers"):
        registry.get("scorer", "DotScorer")


# ------------------------------------------------------- entry-point discovery
@pytest.fixture
def installed(
    monkeypatch: pytest.MonkeyPatch, example_plugin: Path, broken_plugin: Path, fresh_registry: Callable[[], Registry]
) -> Callable[..., Registry]:
    """Both test plugin distributions on sys.path; ``installed(**env)`` loads a fresh registry."""
    monkeypatch.syspath_prepend(str(example_plugin))
    monkeypatch.syspath_prepend(str(broken_plugin))

    def load(**env: str) -> Registry:
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        monkeypatch.setattr(attnrec.plugins, "_REGISTRY", None)
        return fresh_registry()

    return load


def test_broken_plugins_are_reported_with_their_distribution_and_the_others_load(installed) -> None:
    with pytest.warns(RuntimeWarning) as warned:
        registry = installed(ATTNREC_LOAD_PLUGINS="example,broken_import,broken_hook")
    example = registry.plugins["example"]
    assert (example.distribution, example.version) == ("attnrec-plugin-example", "0.3.1")
    assert {(c.kind, c.name) for c in example.components} == {
        ("attentions", "ALiBiAttention"), ("scorers", "LearnedTemperatureScorer"),
    }  # fmt: skip
    failures = {failure.name: failure for failure in registry.failures}
    assert set(failures) == {"broken_import", "broken_hook"}
    assert all(failure.distribution == "attnrec-plugin-broken" for failure in failures.values())
    assert isinstance(failures["broken_import"].error, ModuleNotFoundError)
    assert "attnrec_missing_dependency" in str(failures["broken_import"])
    assert "scorer registry of this plugin is corrupt" in str(failures["broken_hook"])
    assert "HalfRegisteredScorer" not in registry.names("scorers")  # rolled back
    assert any("'broken_hook' from distribution 'attnrec-plugin-broken'" in str(w.message) for w in warned)


def test_strict_mode_makes_a_broken_plugin_fatal(installed) -> None:
    with pytest.raises(PluginError, match="'broken_import' from distribution 'attnrec-plugin-broken'.*ModuleNotFoundError"):
        installed(ATTNREC_LOAD_PLUGINS="example,broken_import", ATTNREC_STRICT_PLUGINS="1")
    assert attnrec.plugins._REGISTRY is None  # nothing half-loaded stays behind


def test_disable_switch_skips_plugins_and_the_others_are_discovered(installed) -> None:
    registry = installed(ATTNREC_DISABLE_PLUGINS="broken_import, broken_hook")
    assert "example" in registry.plugins
    discovered = set(registry.plugins) | {f.name for f in registry.failures}
    assert not {"broken_import", "broken_hook"} & discovered
    assert {"ecommerce", "news", "graph", "video"} <= discovered  # the built-in domain plugins, by entry point


def test_load_switch_selects_and_reports_names_not_installed(installed) -> None:
    assert set(installed(ATTNREC_LOAD_PLUGINS="example").plugins) == {"attnrec.builtin", "example"}
    with pytest.warns(RuntimeWarning, match=r"not installed: exampel; installed: .*example"):
        registry = installed(ATTNREC_LOAD_PLUGINS="exampel")
    assert set(registry.plugins) == {"attnrec.builtin"}


def test_an_entry_point_name_taken_by_another_distribution_is_a_failure(installed, tmp_path, monkeypatch) -> None:
    info = tmp_path / "attnrec_plugin_impostor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: attnrec-plugin-impostor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[attnrec]\nexample = attnrec_example_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="already taken"):
        registry = installed(ATTNREC_LOAD_PLUGINS="example")
    assert len(registry.plugins["example"].components) == 2
    (failure,) = registry.failures
    assert failure.name == "example" and "already taken by distribution" in str(failure)
    distributions = {failure.distribution, registry.plugins["example"].distribution}
    assert distributions == {"attnrec-plugin-example", "attnrec-plugin-impostor"}


# ------------------------------------------------- the example plugin's components
@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, example_plugin: Path) -> Any:
    monkeypatch.syspath_prepend(str(example_plugin))
    import attnrec_example_plugin

    return attnrec_example_plugin


def test_example_components_pass_attnrec_conformance_checks(example) -> None:
    check_attention(example.ALiBiAttention)
    check_attention(functools.partial(example.ALiBiAttention, num_heads=4, learn_slopes=True))
    check_scorer(example.LearnedTemperatureScorer)


def test_alibi_attention_prefers_recent_keys_and_can_learn_its_slopes(example) -> None:
    attention = example.ALiBiAttention(8, num_heads=4, learn_slopes=True).eval()
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
    fixed = example.ALiBiAttention(8, num_heads=4)
    assert "log_slopes" not in dict(fixed.named_parameters()) and "log_slopes" in dict(fixed.named_buffers())


def test_learned_temperature_scorer_is_scale_invariant_and_learns_its_temperature(example) -> None:
    scorer = example.LearnedTemperatureScorer(8, init_temperature=0.2)
    assert scorer.temperature == pytest.approx(0.2)
    users, items = torch.randn(3, 8), torch.randn(5, 8)
    scores: Tensor = scorer(users, items)
    assert torch.allclose(scorer(7.0 * users, 0.5 * items), scores, atol=1e-5)
    assert scores.abs().max() <= 1 / 0.2 + 1e-4
    scores.logsumexp(-1).sum().backward()
    assert scorer.log_scale.grad is not None and scorer.log_scale.grad != 0
    with pytest.raises(ValueError, match="init_temperature must be positive"):
        example.LearnedTemperatureScorer(8, init_temperature=0.0)
