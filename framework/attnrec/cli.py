"""``attnrec``: LightningCLI (fit/validate/test/predict) plus ``plugins`` and ``recommend``.

Plugins are loaded before the parser is built, so components can be named by their short
class names (``--model.scorer=CosineScorer``) and ``--help`` covers plugin components; a name
that resolves to nothing is answered with the registered names that come close. The two extra
subcommands are dispatched in front of LightningCLI instead of overriding its internals.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import warnings
from importlib import resources
from typing import Any, NoReturn, Sequence

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .interfaces import RecDataModule
from .model import Recommender
from .plugins import PluginError, get_registry

DEFAULT_CONFIG = str(resources.files("attnrec") / "configs" / "default.yaml")
DEFAULT_MODEL = str(resources.files("attnrec") / "configs" / "default_model.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
EXTRA = "Also: `attnrec plugins` (installed plugins and their components), `attnrec recommend --ckpt_path CKPT --user ID -k 10`."


class AttnRecArgumentParser(LightningArgumentParser):
    """jsonargparse's errors for a short class name it cannot resolve say only "Expected a dot
    import path string"; this adds the registered names that come close, or all of them."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        unresolved = sorted(set(re.findall(r"Expected a dot import path string: ([\w.]+)", message)))
        if unresolved:
            message += "\n" + component_hints(unresolved)
        super().error(message, ex)


def component_hints(names: Sequence[str]) -> str:
    registry = get_registry()
    known = {name: kind for kind in registry.components for name in registry.names(kind)}
    lines = []
    for name in names:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
        if close:
            guesses = ", ".join(f"{guess} ({known[guess]})" for guess in close)
            lines.append(f"{name!r} is not a registered component; did you mean {guesses}?")
        else:
            lines.append(f"{name!r} is not a registered component; registered ones by kind:")
            lines += [f"  {kind}: {', '.join(registry.names(kind))}" for kind in registry.components if registry.names(kind)]
    return "\n".join(lines + ["(`attnrec plugins` lists installed plugins and what each registered)"])


class AttnRecCLI(LightningCLI):
    """Links data facts into the model and tests the best checkpoint after ``fit``."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.catalog", "model.init_args.catalog", apply_on="instantiate")
        parser.link_arguments("data.max_len", "model.init_args.max_len", apply_on="instantiate")

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        ckpt = "best" if self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        if self.trainer.is_global_zero and ckpt:
            print(f"best checkpoint: {self.trainer.checkpoint_callback.best_model_path}")


def default_config_files(args: Sequence[str]) -> list[str]:
    """The defaults under a run: trainer and data always; the default model only when neither
    the command line nor a config file names a model class, so a chosen model keeps the
    defaults of its own signature (a ``class_path`` switch would otherwise inherit the default
    model's init_args). ``--model.dim=32`` alone tunes the default model."""
    names_model = any(
        arg in ("--model", "--model.class_path") or arg.startswith(("--model=", "--model.class_path=")) for arg in args
    )
    for path in _config_paths(args):
        try:
            with open(path) as handle:
                content = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue  # LightningCLI reports an unreadable config itself
        model = content.get("model") if isinstance(content, dict) else None
        names_model = names_model or isinstance(model, str) or (isinstance(model, dict) and "class_path" in model)
    return [DEFAULT_CONFIG] if names_model else [DEFAULT_CONFIG, DEFAULT_MODEL]


def _config_paths(args: Sequence[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def lightning_main(args: Sequence[str] | None = None) -> AttnRecCLI:
    get_registry()  # import plugin classes so short names resolve
    kwargs = {"default_config_files": default_config_files(list(sys.argv[1:] if args is None else args))}
    return AttnRecCLI(
        Recommender,
        RecDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=AttnRecArgumentParser,
        parser_kwargs={"prog": "attnrec", "epilog": EXTRA, **{name: kwargs for name in SUBCOMMANDS}},
        save_config_kwargs={"overwrite": True},
        args=args,
    )


# ----------------------------------------------------------------- plugins
def plugins_main(argv: Sequence[str]) -> int:
    """Broken plugins are reported on stderr without failing the listing (that is what
    ``ATTNREC_STRICT_PLUGINS=1`` is for), so the command stays usable to diagnose them."""
    parser = argparse.ArgumentParser(prog="attnrec plugins", description="List installed plugins and their components.")
    parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    with warnings.catch_warnings():  # failures are listed below, once
        warnings.simplefilter("ignore", RuntimeWarning)
        registry = get_registry()
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)  # piped (grep, tests): do not fold component names
    table = Table(title="attnrec plugins")
    for column in ("plugin", "distribution", "version", "kind", "components"):
        table.add_column(column, overflow="fold")
    for info in registry.plugins.values():
        by_kind: dict[str, list[str]] = {}
        for component in info.components:
            label = f"{component.name} ({component.display_name})" if component.display_name else component.name
            by_kind.setdefault(component.kind, []).append(label)
        first = True
        for kind, names in by_kind.items() or [("-", [])]:
            row = (info.name, info.distribution, info.version) if first else ("", "", "")
            table.add_row(*row, kind, ", ".join(names))
            first = False
    console.print(table)
    errors = Console(stderr=True, width=console.width)
    for failure in registry.failures:
        errors.print(f"failed: {failure}", markup=False, highlight=False)
    return 0


# --------------------------------------------------------------- recommend
def recommend_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="attnrec recommend", description="Print top-k recommendations from a checkpoint written by `attnrec fit`."
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file")
    parser.add_argument("--user", action="append", required=True, help="raw user id (repeatable)")
    parser.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument("--include_seen", action="store_true", help="do not exclude items the user already has")
    args = parser.parse_args(argv)
    get_registry()
    from lightning import LightningDataModule
    from rich.console import Console
    from rich.table import Table

    try:
        model = Recommender.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=False)
        datamodule = LightningDataModule.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=False)
    except (argparse.ArgumentError, ImportError) as exc:  # a component's class cannot be imported here
        raise SystemExit(
            f"{args.ckpt_path}: cannot rebuild the model: {exc}\n"
            "Is the plugin that provides its components installed? (`attnrec plugins` lists them)"
        ) from None
    if not isinstance(datamodule, RecDataModule):
        raise SystemExit(f"{args.ckpt_path}: its data module {type(datamodule).__name__} is not a RecDataModule")
    model.eval()
    catalog = model.catalog
    console = Console()
    for user in args.user:
        try:
            batch = datamodule.user_batch([user])
        except KeyError as exc:
            raise SystemExit(str(exc.args[0])) from None
        items, scores = model.recommend(batch, k=args.k, exclude_seen=not args.include_seen)
        count = int((batch["seen"] != 0).sum())
        table = Table(title=f"top {args.k} for user {user} ({count} interactions)")
        for column in ("rank", "item", "title", "score"):
            table.add_column(column)
        for rank, (item, score) in enumerate(zip(items[0].tolist(), scores[0].tolist()), start=1):
            raw = catalog.raw_ids[item] if catalog.raw_ids else item
            table.add_row(str(rank), str(raw), catalog.title(item) if catalog.titles else "", f"{score:.3f}")
        console.print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except PluginError as exc:  # raised only under ATTNREC_STRICT_PLUGINS=1; the traceback adds nothing
        print(f"attnrec: {exc}", file=sys.stderr)
        return 1


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "plugins":
        return plugins_main(argv[1:])
    if argv and argv[0] == "recommend":
        return recommend_main(argv[1:])
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help", "--version"):
        if argv and not argv[0].startswith("-"):
            print(f"attnrec: unknown subcommand {argv[0]!r}; choose from {', '.join((*SUBCOMMANDS, 'recommend', 'plugins'))}",
                  file=sys.stderr)
            return 2
        if not argv:
            argv = ["fit"]
    lightning_main(None if argv == sys.argv[1:] else argv)  # LightningCLI warns when given both
    return 0


if __name__ == "__main__":
    sys.exit(main())
