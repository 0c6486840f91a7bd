"""Built-in plugins use only the public API (issue 9): no class a plugin defines overrides a
single-underscore method of a core class or of another plugin's class, none assigns a private
attribute that such a base class defines, and the plugin data modules take every pipeline argument of the core's
SequenceDataModule (forwarded with ``**kwargs``, restated only with the core's types)."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import pytest
from attnrec.data import SequenceDataModule
from attnrec.plugins import get_registry
from jsonargparse import ArgumentParser

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
METHODS = (property, classmethod, staticmethod, functools.cached_property)
FIXED = {
    "LightGCNFilesDataModule": {"split", "val_ratio", "test_ratio"},
    "LastFMSocialDataModule": {"split", "val_ratio", "test_ratio"},
}
"""Base arguments a plugin data module fixes on purpose (its files are the split)."""


def _is_core(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "attnrec"


def _foreign(cls: type, base: type) -> bool:
    """Whether ``base`` is the core's or another attnrec plugin's: what ``cls`` may extend only
    through public names."""
    package, owner = cls.__module__.split(".")[0], base.__module__.split(".")[0]
    return owner != package and owner.startswith("attnrec")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _plugin_classes() -> list[type]:
    """Every class defined in a built-in plugin's modules that subclasses a core class."""
    found = []
    for path in sorted(PLUGINS.glob("attnrec_*/**/*.py")):
        parts = path.relative_to(PLUGINS).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and any(_is_core(base) for base in cls.__mro__[1:]):
                found.append(cls)
    return found


CLASSES = _plugin_classes()


def _self_assignments(cls: type) -> set[str]:
    """Names ``x`` of every ``self.x = ...`` (also annotated and augmented) in a class's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    names.add(leaf.attr)
    return names


def private_overrides(cls: type) -> list[str]:
    """Single-underscore methods (and properties) of ``cls`` that a base class of the core or of
    another plugin defines."""
    core = [base for base in cls.__mro__[1:] if _foreign(cls, base)]
    return sorted(
        f"{name} (defined by {next(base.__qualname__ for base in core if name in vars(base))})"
        for name, value in vars(cls).items()
        if _private(name) and (inspect.isfunction(value) or isinstance(value, METHODS))
        and any(name in vars(base) for base in core)
    )  # fmt: skip


def private_assignments(cls: type) -> list[str]:
    """``self._x = ...`` in ``cls`` where a base class of the core or of another plugin defines
    ``_x``."""
    core = [base for base in cls.__mro__[1:] if _foreign(cls, base)]
    owned = {name: base.__qualname__ for base in reversed(core) for name in _self_assignments(base) | set(vars(base))}
    return sorted(f"self.{name} (defined by {owned[name]})" for name in _self_assignments(cls) if _private(name) and name in owned)


class _Offender(SequenceDataModule):
    """What the scan must catch: the plugin data modules before issue 9."""

    def _prepare(self) -> None:
        super()._prepare()
        self._catalog = None

    def _own_helper(self) -> None:  # private, but not the core's: allowed
        self._mine = 1


def test_the_scan_catches_overrides_and_assignments() -> None:
    from attnrec_graph.encoders import LightGCNEncoder

    class OtherPluginsOffender(LightGCNEncoder):
        """The social plugin's encoder before it used the graph plugin's public hook."""

        def _graph(self, catalog):  # the graph plugin's private method
            return super()._graph(catalog)

        def node_vectors(self, x):  # its public hook: allowed
            return super().node_vectors(x)

    assert private_overrides(_Offender) == ["_prepare (defined by SequenceDataModule)"]
    assert private_assignments(_Offender) == ["self._catalog (defined by SequenceDataModule)"]
    assert private_overrides(OtherPluginsOffender) == ["_graph (defined by GraphEncoder)"]
    names = {cls.__name__ for cls in CLASSES}
    assert {"VideoDataModule", "KGDataModule", "TaobaoDataModule", "MINDDataModule", "GraphRecommender"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_no_plugin_class_overrides_a_private_core_method(cls: type) -> None:
    overrides = private_overrides(cls)
    assert not overrides, (
        f"{cls.__qualname__} overrides private methods of the core or another plugin: {', '.join(overrides)}; "
        "override a public hook instead, or make one"
    )


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_no_plugin_class_assigns_a_private_core_attribute(cls: type) -> None:
    assigned = private_assignments(cls)
    assert not assigned, f"{cls.__qualname__} assigns private attributes of the core or another plugin: {', '.join(assigned)}"


def _sequence_modules() -> list[type]:
    registry = get_registry()
    classes = [registry.get("data", name) for name in registry.names("data")]
    return [cls for cls in classes if issubclass(cls, SequenceDataModule) and not _is_core(cls)]


@pytest.mark.parametrize("cls", _sequence_modules(), ids=lambda cls: cls.__name__)
def test_plugin_data_modules_take_every_pipeline_argument(cls: type) -> None:
    """What ``attnrec fit --data.help <cls>`` lists: jsonargparse follows the ``**kwargs``."""
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    listed = set(re.findall(r"--data\.(\w+)", parser.format_help()))
    pipeline = set(inspect.signature(SequenceDataModule.__init__).parameters) - {"self"}
    assert "eval_mask_seen" in pipeline
    assert listed >= pipeline - FIXED.get(cls.__name__, set())
    assert not listed & FIXED.get(cls.__name__, set())
    base = inspect.signature(SequenceDataModule.__init__).parameters
    for klass in cls.__mro__:
        if klass is SequenceDataModule:
            break
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if name in pipeline and "__init__" in vars(klass):
                assert parameter.annotation == base[name].annotation, (
                    f"{klass.__name__} restates {name!r} as {parameter.annotation}; keep the core's type {base[name].annotation}"
                )
