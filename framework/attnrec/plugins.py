"""Plugin discovery (pluggy + entry points) and the component registry.

Plugins are loaded one entry point at a time so that a broken one is reported with its
distribution name and the original error while the others still load (pluggy's own
``load_setuptools_entrypoints`` stops at the first failure).

Environment switches:
``ATTNREC_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none but the built-ins;
a name that is not installed is reported, so a typo does not silently load nothing);
``ATTNREC_DISABLE_PLUGINS=a,b`` skips them; ``ATTNREC_STRICT_PLUGINS=1`` makes failures fatal
(the error names every failed plugin, not just the first). Two distributions declaring the same
entry-point name is a failure of the second one, not a silent skip.

A failed plugin's component classes are disabled (made abstract, see ``_disable``): the CLI
resolves a short class name (``--model.scorer=DotScorer``) among the imported subclasses of the
interfaces, so a class imported before its plugin failed would otherwise still train by short
name, and one named like a registered class would make that name ambiguous.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

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

DISABLED = "attnrec_plugin_failed_to_load"
"""The abstract method that a disabled class lacks: named in Python's 'Can't instantiate' error."""
_DISABLED: dict[type, frozenset[str] | None] = {}
"""Classes disabled by the last registry that loaded entry points, with their own abstract methods."""


def _disable(classes: Iterable[type]) -> None:
    """Make ``classes`` abstract, so jsonargparse skips them when it resolves a short class name
    (a registered class of the same name then wins alone) and neither the CLI nor Python can
    instantiate them. Abstractness is per class: subclasses are not affected. Python offers no
    other way to withdraw an imported class from ``__subclasses__``, which is what
    jsonargparse searches."""
    for cls in classes:
        _DISABLED.setdefault(cls, cls.__dict__.get("__abstractmethods__"))
        cls.__abstractmethods__ = frozenset({*(_DISABLED[cls] or ()), DISABLED})


def _enable_all() -> None:
    """Undo :func:`_disable` (a registry loading afresh decides again which plugins failed)."""
    for cls, methods in _DISABLED.items():
        if methods is None:
            del cls.__abstractmethods__
        else:
            cls.__abstractmethods__ = methods
    _DISABLED.clear()


def _defined_in(cls: type, modules: Iterable[str]) -> bool:
    return any(cls.__module__ == module or cls.__module__.startswith(module + ".") for module in modules)


def _subclasses(bases: Iterable[type]) -> Iterator[type]:
    seen: set[type] = set()
    stack = [sub for base in bases for sub in base.__subclasses__()]
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            stack.extend(cls.__subclasses__())


class Registry:
    """Loaded plugins and what each registered, by kind."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.disabled: dict[str, PluginFailure] = {}
        """Import path of each class disabled because its plugin failed (see :func:`disable`)."""
        self._offered: dict[str, list[type]] = {}  # what a plugin that failed tried to register

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
        offered: list[type] = []
        try:
            for kind in KINDS:
                caller = getattr(self.pm.hook, f"register_{kind}")
                for impl in caller.get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(register=self._register_fn(kind, name, added, offered))
        except BaseException:
            for component in added:  # leave no half-registered plugin behind
                del self.components[component.kind][component.name]
            self.pm.unregister(name=name)
            self._offered[name] = offered
            raise
        info.components = added
        self.plugins[name] = info

    def _register_fn(self, kind: str, plugin: str, added: list[Component], offered: list[type]) -> hookspecs.Register:
        interfaces = _interfaces()[kind]

        def register(cls: type, name: str | None = None) -> None:
            if not isinstance(cls, type) or not issubclass(cls, interfaces):
                wanted = " or ".join(f"{i.__module__.split('.')[0]}.{i.__name__}" for i in interfaces)
                raise TypeError(f"plugin {plugin!r}: register_{kind} got {cls!r}, which is not a subclass of {wanted}")
            offered.append(cls)
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
        """Load every selected entry point, then disable the component classes of those that
        failed; under ``ATTNREC_STRICT_PLUGINS`` raise one :class:`PluginError` naming them all."""
        only = _env_list("ATTNREC_LOAD_PLUGINS")
        disabled = set(_env_list("ATTNREC_DISABLE_PLUGINS") or [])
        strict = os.environ.get("ATTNREC_STRICT_PLUGINS", "") not in ("", "0", "false", "False")
        entry_points = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        problems: list[str] = []
        if only:
            missing = sorted(set(only) - {ep.name for ep in entry_points})
            if missing:
                installed = ", ".join(sorted({ep.name for ep in entry_points})) or "none"
                problems.append(
                    f"ATTNREC_LOAD_PLUGINS names plugins that are not installed: {', '.join(missing)}; "
                    f"installed: {installed}"
                )
        _enable_all()
        failed: list[tuple[PluginFailure, str | None]] = []  # with the module the plugin was loaded from
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
                module = ep.module if owner is None else None  # an impostor's module is the owner's: not loaded
                failed.append((PluginFailure(name=ep.name, distribution=dist, error=exc), module))
        for failure, module in failed:
            self._disable_classes_of(failure, module)
        problems += [str(failure) for failure, _ in failed]
        if strict and problems:
            errors = [failure.error for failure, _ in failed]
            summary = f"{len(problems)} plugin problems" if len(problems) > 1 else "a plugin problem"
            raise PluginError(
                "\n".join(problems) + f"\n({summary}; ATTNREC_STRICT_PLUGINS=1 makes them fatal: fix or uninstall "
                "the plugins, or unset it)"
            ) from (errors[0] if len(errors) == 1 else None)
        for message in problems:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self.failures += [failure for failure, _ in failed]

    def _disable_classes_of(self, failure: PluginFailure, module: str | None) -> None:
        """Disable what a failed plugin brought: the component classes it offered to
        ``register`` and those defined in its entry point's ``module`` (or package), except
        classes that a loaded plugin registered or defines (a shared helper stays usable)."""
        offered = self._offered.pop(failure.name, [])
        registered = {component.cls for components in self.components.values() for component in components.values()}
        loaded = [name for name in (getattr(plugin, "__name__", None) for plugin in self.pm.get_plugins()) if name]
        interfaces = {base for bases in _interfaces().values() for base in bases}
        mine = [
            cls
            for cls in _subclasses(interfaces)
            if cls not in registered
            and not _defined_in(cls, loaded)
            and (cls in offered or (module is not None and _defined_in(cls, [module])))
        ]
        _disable(mine)
        self.disabled.update({f"{cls.__module__}.{cls.__qualname__}": failure for cls in mine})

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
