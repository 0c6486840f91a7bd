"""The plugin registry: interface checks, clashes, isolation of broken plugins, the
environment switches, and the example third-party plugin: its loss from the command line, and
its own test suite run against the installed copy.

Registry rules are tested with in-process plugin objects (fast); discovery through entry
points uses the plugin packages under tests/, pip-installed into a temporary site dir that
is put on ``sys.path`` for the test only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from jsonargparse import ArgumentParser

import attnrec
import attnrec.plugins
from attnrec import builtin
from attnrec.attention import AdditiveAttention, MultiHeadAttention, TargetAttention
from attnrec.plugins import PluginError, Registry, UnknownComponentError
from attnrec.scorers import DotScorer

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
    assert (example.distribution, example.version) == ("attnrec-plugin-example", "0.4.0")
    assert {(c.kind, c.name) for c in example.components} == {
        ("attentions", "ALiBiAttention"), ("scorers", "LearnedTemperatureScorer"), ("losses", "LabelSmoothingLoss"),
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


def test_strict_mode_names_every_problem(installed) -> None:
    with pytest.raises(PluginError) as error:
        installed(
            ATTNREC_LOAD_PLUGINS="broken_clash,broken_hook,broken_import,example,exampel", ATTNREC_STRICT_PLUGINS="1"
        )
    lines = str(error.value).splitlines()
    assert lines[0].startswith("ATTNREC_LOAD_PLUGINS names plugins that are not installed: exampel")
    failed = "from distribution 'attnrec-plugin-broken' failed"
    assert lines[1].startswith(f"plugin 'broken_clash' {failed}: PluginError: scorers component name 'DotScorer'")
    assert lines[2].startswith(f"plugin 'broken_hook' {failed}: RuntimeError")
    assert lines[3].startswith(f"plugin 'broken_import' {failed}: ModuleNotFoundError")
    assert lines[4].startswith("(4 plugin problems; ATTNREC_STRICT_PLUGINS=1 makes them fatal: fix or uninstall")


def test_a_failed_plugin_classes_are_disabled_and_the_registered_name_wins(
    installed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The rejected plugin's own DotScorer no longer makes ``DotScorer`` ambiguous, and the
    rolled-back HalfRegisteredScorer cannot build a model (jsonargparse accepts an abstract
    class for a factory argument, so the build refuses it)."""
    with pytest.warns(RuntimeWarning, match="broken_clash"):
        registry = installed(ATTNREC_LOAD_PLUGINS="broken_hook,broken_clash")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--scorer", type=Callable[[int], attnrec.Scorer])  # as the model's scorer factory
    assert parser.parse_args(["--scorer=DotScorer"]).scorer.class_path == "attnrec.scorers.DotScorer"
    factory = parser.instantiate_classes(parser.parse_args(["--scorer=HalfRegisteredScorer"])).scorer
    with pytest.raises(TypeError, match="abstract class HalfRegisteredScorer .*attnrec_plugin_failed_to_load"):
        factory(8)
    assert set(registry.disabled) == {
        "attnrec_broken_plugin.hook_error.HalfRegisteredScorer", "attnrec_broken_plugin.name_clash.DotScorer",
    }  # fmt: skip
    assert registry.disabled["attnrec_broken_plugin.name_clash.DotScorer"].name == "broken_clash"
    from attnrec.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model.scorer=DotScorer", "--print_config"])
    assert done.value.code in (0, None) and "class_path: attnrec.scorers.DotScorer" in capsys.readouterr().out


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
    assert len(registry.plugins["example"].components) == 3
    (failure,) = registry.failures
    assert failure.name == "example" and "already taken by distribution" in str(failure)
    distributions = {failure.distribution, registry.plugins["example"].distribution}
    assert distributions == {"attnrec-plugin-example", "attnrec-plugin-impostor"}


# ------------------------------------------------------------ the example plugin
def test_the_example_plugin_registers_its_loss_through_register_losses(installed) -> None:
    registry = installed(ATTNREC_LOAD_PLUGINS="example")
    (impl,) = [i for i in registry.pm.hook.register_losses.get_hookimpls() if i.plugin_name == "example"]
    loss = registry.get("losses", "LabelSmoothingLoss")
    assert loss is impl.plugin.LabelSmoothingLoss and issubclass(loss, attnrec.Loss)
    assert registry.components["losses"]["LabelSmoothingLoss"].plugin == "example"
    assert {"CrossEntropyLoss", "SampledSoftmaxLoss", "LabelSmoothingLoss"} <= set(registry.names("losses"))


def test_fit_trains_with_the_example_plugin_loss_named_by_class(
    example_plugin, attnrec_env, run_attnrec, tiny_data_args, tmp_path
) -> None:
    result = run_attnrec(
        "fit", *tiny_data_args, "--model.dim=16", "--model.init_args.loss=LabelSmoothingLoss",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}", env=attnrec_env(example_plugin, ATTNREC_LOAD_PLUGINS="example"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^protocol: .*\bloss=LabelSmoothingLoss\b", result.stdout, re.MULTILINE), result.stdout
    (config,) = tmp_path.rglob("config.yaml")
    assert "class_path: attnrec_example_plugin.LabelSmoothingLoss" in config.read_text()


def test_the_example_plugin_own_suite_passes_against_the_installed_copy(example_plugin, attnrec_env, tmp_path) -> None:
    """What a plugin author does with the template: install it, run its tests. The copy leaves
    the package source out, so they can only import the installed package; attnrec's own suite
    does not collect them (tests/plugin_example/tests/conftest.py)."""
    copy = tmp_path / "plugin_example"
    ignore = shutil.ignore_patterns("__pycache__", "attnrec_example_plugin")
    shutil.copytree(Path(__file__).parent / "plugin_example", copy, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(copy)],
        env=attnrec_env(example_plugin, ATTNREC_LOAD_PLUGINS="example"), cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ passed", result.stdout) and "skipped" not in result.stdout, result.stdout
