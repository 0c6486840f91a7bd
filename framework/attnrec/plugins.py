"""Plugin discovery (pluggy + entry points) and the component registry.

Plugins are loaded one entry point at a time so that a broken one is reported with its
distribution name and the original error while the others still load (pluggy's own
``load_setuptools_entrypoints`` stops at the first failure).

Environment switches:
``ATTNREC_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none but the built-ins;
a name that is not installed is reported, so a typo does not silently load nothing);
``ATTNREC_DISABLE_PLUGINS=a,b`` skips them; ``ATTNREC_STRICT_PLUGINS=1`` makes failures fatal.
Two distributions declaring the same entry-point name is a failure of the second one, not a
silent skip.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .hookspecs import PROJECT

ENTRY_POINT_GROUP = PROJECT
BUILTIN = "attnrec.builtin"


class PluginError(RuntimeError):
    """A plugin could not be imported or registered."""


class UnknownComponentError(KeyError):
    """A component name that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    cls: type
    plugin: str
    display_name: str | None = None


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    components: list[Component] = field(default_factory=list)


@dataclass(frozen=True)
class PluginFailure:
    name: str
    distribution: str
    error: BaseException

    def __str__(self) -> str:
        return f"plugin {self.name!r} from distribution {self.distribution!r} failed: {type(self.error).__name__}: {self.error}"


def _interfaces() -> dict[str, tuple[type, ...]]:
    # Imported lazily: interfaces import lightning, and the registry must not import the model.
    from .interfaces import Attention, ItemEncoder, Loss, RankingMetric, RecDataModule, Scorer, UserEncoder
    from .model import Recommender

    return {
        "data": (RecDataModule,),
        "encoders": (ItemEncoder, UserEncoder),
        "attentions": (Attention,),
        "scorers": (Scorer,),
        "losses": (Loss,),
        "recommenders": (Recommender,),
        "metrics": (RankingMetric,),
    }


KINDS = ("data", "encoders", "attentions", "scorers", "losses", "recommenders", "metrics")


class Registry:
    """Loaded plugins and what each registered, by kind."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []

    # ----------------------------------------------------------------- loading
    def add_plugin(self, module: Any, name: str, distribution: str = "attnrec", version: str = "") -> None:
        """Register one plugin module (or object with hookimpls) and run its registration hooks."""
        if not version:
            version = _version_of(distribution)
        try:
            self.pm.register(module, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:  # name taken, or a hook's arguments misspelled
            raise PluginError(f"plugin {name!r} ({distribution}) cannot be registered: {exc}") from exc
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            raise PluginError(f"plugin {name!r} ({distribution}) implements an unknown hook: {exc}") from exc
        info = PluginInfo(name=name, distribution=distribution, version=version)
        added: list[Component] = []
        try:
            for kind in KINDS:
                caller = getattr(self.pm.hook, f"register_{kind}")
                for impl in caller.get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(register=self._register_fn(kind, name, added))
        except BaseException:
            for component in added:  # leave no half-registered plugin behind
                del self.components[component.kind][component.name]
            self.pm.unregister(name=name)
            raise
        info.components = added
        self.plugins[name] = info

    def _register_fn(self, kind: str, plugin: str, added: list[Component]) -> hookspecs.Register:
        interfaces = _interfaces()[kind]

        def register(cls: type, name: str | None = None) -> None:
            if not isinstance(cls, type) or not issubclass(cls, interfaces):
                wanted = " or ".join(f"{i.__module__.split('.')[0]}.{i.__name__}" for i in interfaces)
                raise TypeError(f"plugin {plugin!r}: register_{kind} got {cls!r}, which is not a subclass of {wanted}")
            key = cls.__name__
            existing = self.components[kind].get(key)
            if existing is not None and existing.cls is cls and existing.plugin == plugin:
                return  # registered twice by the same hook: harmless
            if existing is not None:
                raise PluginError(
                    f"{kind} component name {key!r} from plugin {plugin!r} ({cls.__module__}) clashes with the one "
                    f"from plugin {existing.plugin!r} ({existing.cls.__module__}); rename one of the classes"
                )
            component = Component(kind=kind, name=key, cls=cls, plugin=plugin, display_name=name)
            self.components[kind][key] = component
            added.append(component)

        return register

    def load_entry_points(self) -> None:
        only = _env_list("ATTNREC_LOAD_PLUGINS")
        disabled = set(_env_list("ATTNREC_DISABLE_PLUGINS") or [])
        strict = os.environ.get("ATTNREC_STRICT_PLUGINS", "") not in ("", "0", "false", "False")
        entry_points = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        if only:
            missing = sorted(set(only) - {ep.name for ep in entry_points})
            if missing:
                installed = ", ".join(sorted({ep.name for ep in entry_points})) or "none"
                message = (
                    f"ATTNREC_LOAD_PLUGINS names plugins that are not installed: {', '.join(missing)}; "
                    f"installed: {installed}"
                )
                if strict:
                    raise PluginError(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        tried: dict[str, str] = {}  # entry-point name -> distribution
        for ep in entry_points:
            if ep.name in disabled or (only is not None and ep.name not in only):
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            owner = tried.get(ep.name) or (self.plugins[ep.name].distribution if ep.name in self.plugins else None)
            if owner == dist:
                continue  # the same distribution found twice on sys.path, or loaded before
            tried.setdefault(ep.name, dist)
            try:
                if owner is not None:
                    raise PluginError(f"its name is already taken by distribution {owner!r}; rename the entry point")
                version = ep.dist.version if ep.dist is not None else ""
                self.add_plugin(ep.load(), name=ep.name, distribution=dist, version=version)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the others down
                failure = PluginFailure(name=ep.name, distribution=dist, error=exc)
                if strict:
                    raise PluginError(str(failure)) from exc
                self.failures.append(failure)
                warnings.warn(str(failure), RuntimeWarning, stacklevel=2)

    # ----------------------------------------------------------------- lookups
    def get(self, kind: str, name: str) -> type:
        if kind not in self.components:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        try:
            return self.components[kind][name].cls
        except KeyError:
            available = ", ".join(sorted(self.components[kind])) or "none"
            raise UnknownComponentError(
                f"no {kind} component named {name!r}; available: {available}. "
                "Is the plugin that provides it installed (see `attnrec plugins`)?"
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])


def _env_list(var: str) -> list[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _version_of(distribution: str) -> str:
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return "unknown"


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry: built-ins plus installed entry-point plugins, loaded once."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        from . import builtin

        registry.add_plugin(builtin, name=BUILTIN)
        registry.load_entry_points()
        _REGISTRY = registry
    return _REGISTRY


def load_plugins() -> Registry:
    """Load all plugins (idempotent) so their classes can be named in configs by short name."""
    return get_registry()


def reset_registry() -> None:
    """Forget loaded plugins (tests that change the environment switches use this)."""
    global _REGISTRY
    _REGISTRY = None


def get_component(kind: str, name: str) -> type:
    return get_registry().get(kind, name)
