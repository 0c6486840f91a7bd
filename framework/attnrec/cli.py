"""``attnrec``: LightningCLI (fit/validate/test/predict) plus ``plugins`` and ``recommend``.

Plugins are loaded before the parser is built, so components can be named by their short
class names (``--model.scorer=CosineScorer``) and ``--help`` covers plugin components; a name
that resolves to nothing is answered with the registered names that come close. The two extra
subcommands are dispatched in front of LightningCLI instead of overriding its internals.

Every run logs into a ``lightning_logs/version_N`` of its own (chosen atomically, so runs
started together never share one); ``--ckpt_path last`` resumes the newest run's
``last.ckpt``. Data, configuration and checkpoint errors print one screen in CLI terms and
exit 1; ``--debug`` (or ``ATTNREC_DEBUG=1``) lets their traceback through.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, NoReturn, Sequence

import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from .checkpoints import (
    CheckpointError,
    RandomState,
    last_checkpoints,
    read_checkpoint,
    run_folder,
    saved_random_state,
    set_random_state,
)
from .data.serving import ServingData
from .data.tables import DataFormatError
from .interfaces import ItemCatalog, RecDataModule
from .model import Recommender
from .plugins import PluginError, get_registry

DEFAULT_CONFIG = str(resources.files("attnrec") / "configs" / "default.yaml")
DEFAULT_MODEL = str(resources.files("attnrec") / "configs" / "default_model.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
EXTRA_COMMANDS = ("recommend", "export", "serve", "plugins")
RUNS = "lightning_logs"
EXTRA = (
    "Also: `attnrec plugins` (installed plugins and their components), `attnrec recommend --ckpt_path CKPT --user ID "
    "-k 10`; `attnrec predict --ckpt_path CKPT --predictions.path top.parquet` writes every user's top-k; "
    "`attnrec export`, `attnrec serve`; `attnrec fit --ckpt_path last` resumes the newest run; --debug shows the "
    "traceback of an error."
)


class AttnRecArgumentParser(LightningArgumentParser):
    """Argument and config errors on one screen: jsonargparse's message without argparse's
    usage (some 40 lines of every option) in front of it. Its errors for a short class name it
    cannot resolve say only "Expected a dot import path string"; this adds the registered
    names that come close, or all of them."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        unresolved = sorted(set(re.findall(r"Expected a dot import path string: ([\w.]+)", message)))
        if unresolved:
            message += "\n" + component_hints(unresolved)
        if self.exit_on_error and not os.environ.get("JSONARGPARSE_DEBUG"):
            prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
            sys.stderr.write(f"{prog}: configuration error: {message}\n(`{prog} --help` lists every argument)\n")
            self.exit(2)
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


class CLIError(Exception):
    """A problem with what was given (data, configuration, checkpoint), told in CLI terms;
    :func:`main` prints it as one screen instead of a traceback."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")


class ConfigError(ValueError):
    """A class of the configuration refused its arguments."""


class RunProgressBar(RichProgressBar):
    """Lightning's bar without ``v_num``: the last four characters of the run folder's name
    (``on_3``) say nothing the run folder printed at the end does not."""

    def get_metrics(self, trainer: Trainer, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class AttnRecCLI(LightningCLI):
    """Links data facts into the model, gives each run a folder of its own, resumes and checks
    checkpoints, and tests the best checkpoint after ``fit``.

    ``argv`` is the command line (to tell the arguments a user gave from defaults);
    ``explain_errors`` turns data, configuration and checkpoint errors into :class:`CLIError`
    with the data's arguments spelled as flags.
    """

    def __init__(self, *args: Any, argv: Sequence[str] = (), explain_errors: bool = True, **kwargs: Any) -> None:
        self.argv = list(argv)
        self.random_state: dict[str, Any] | None = None  # of the checkpoint `fit` resumes from
        try:
            super().__init__(*args, **kwargs)
        except Exception as exc:
            explained = explain(exc, self._data_arguments()) if explain_errors else None
            if explained is None:
                raise
            raise explained from exc

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.catalog", "model.init_args.catalog", apply_on="instantiate")
        parser.link_arguments("data.max_len", "model.init_args.max_len", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        """``predict`` gets a :class:`~attnrec.predict.TopKWriter` callback, configured as
        ``--predictions.path`` (Parquet, or CSV by extension; default the run folder's
        ``predictions.parquet``), ``--predictions.k`` and ``--predictions.exclude_seen``."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            from .predict import TopKWriter

            parser.add_lightning_class_args(TopKWriter, "predictions")
        return parser

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (DataFormatError, CheckpointError):
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"building the configured classes failed: {exc}") from exc

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The default logger (``logger`` left unset) writes CSV into a folder made for this run
        by :func:`~attnrec.checkpoints.run_folder`: Lightning's picks its folder later, without
        a lock, so runs started together would share ``version_0``."""
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = CSVLogger(root, name=RUNS, version=run_folder(root, RUNS))
        callbacks = list(kwargs.get("callbacks", config.get("callbacks")) or [])
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RunProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        """Around Lightning's reading of a checkpoint's hyper-parameters into the model's
        config: ``last`` becomes the newest ``last.ckpt`` of the runs here (Lightning would look
        only in the new run's empty folder and train from scratch); the file is read with clear
        errors and its checksum checked; and a ``--model...`` argument that the checkpoint's
        hyper-parameters contradict is refused (Lightning lets them win without a word)."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        path = config.get("ckpt_path") if config is not None else None
        if path in (None, "best", "hpc"):
            return super()._parse_ckpt_path()
        if path == "last":
            config.ckpt_path = path = str(self._last_checkpoint(config))
        checkpoint = read_checkpoint(path)
        self.random_state = saved_random_state(checkpoint) if subcommand == "fit" else None
        conflicts = self._conflicts(config.get("model"), checkpoint.get("hyper_parameters") or {})
        if conflicts:
            raise CheckpointError(
                f"{path}: {'; '.join(conflicts)}. A checkpoint's model is rebuilt from its own hyper-parameters: "
                "drop the argument, or train a model with it."
            )
        super()._parse_ckpt_path()

    def _last_checkpoint(self, config: Namespace) -> Path:
        """The newest ``last*.ckpt`` in the ``dirpath`` a checkpoint callback names, else in
        the run folders of the logger's root (``default_root_dir`` or the logger's save_dir)."""
        trainer = config.get("trainer") or Namespace()
        explicit = [
            callback.init_args.dirpath
            for callback in trainer.get("callbacks") or []
            if isinstance(callback, Namespace) and callback.get("init_args") and callback.init_args.get("dirpath")
        ]
        logger = trainer.get("logger")
        logger_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        logger_args = logger_args.as_dict() if isinstance(logger_args, Namespace) else {}
        runs = Path(logger_args.get("save_dir") or trainer.get("default_root_dir") or os.getcwd())
        runs = runs / (logger_args.get("name") or RUNS)
        found = last_checkpoints(map(Path, explicit) if explicit else runs.glob("*/checkpoints"))
        if not found:
            where = ", ".join(map(str, explicit)) if explicit else f"{runs}/*/checkpoints"
            raise CheckpointError(
                f"--ckpt_path last: no last.ckpt in {where}, so there is no run to resume. Start one without "
                "--ckpt_path (the default ModelCheckpoint writes last.ckpt every epoch; one in your own config "
                "needs save_last: true), or give a checkpoint's path."
            )
        return found[0]

    def _conflicts(self, given: Any, saved: dict[str, Any]) -> list[str]:
        """The ``--model...`` arguments of the command line that the checkpoint's
        hyper-parameters (``saved``) set otherwise; ``given`` is the parsed model config."""
        conflicts = []
        for arg in self.argv:
            if not (arg == "--model" or arg.startswith(("--model.", "--model="))):
                continue
            key = arg[2:].split("=", 1)[0]
            names = [name for name in key.split(".")[1:] if name != "init_args"] or ["class_path"]
            theirs = saved.get("_class_path", _MISSING) if names == ["class_path"] else _lookup(saved, names)
            mine = _lookup(given, names)
            if theirs is not _MISSING and _comparable(mine) != _comparable(theirs):
                conflicts.append(f"--{key}={_show(mine)} conflicts with the checkpoint's {_show(theirs)}")
        return conflicts

    def _data_arguments(self) -> dict[str, Any]:
        """The data's ``init_args`` as parsed, to name an error's fields as flags."""
        config = getattr(self, "config", None)
        if not isinstance(config, Namespace):
            return {}
        subcommand = config.get("subcommand")
        data = (config.get(subcommand) if subcommand else config).get("data")
        init_args = data.get("init_args") if isinstance(data, Namespace) else None
        return init_args.as_dict() if isinstance(init_args, Namespace) else {}

    def before_fit(self) -> None:
        """A resumed run starts from the checkpoint's random state (see
        :class:`~attnrec.checkpoints.RandomState`), so it continues exactly as the run it resumes."""
        if self.random_state is not None:
            set_random_state(self.random_state)

    def before_test(self) -> None:
        self.add_popularity_baseline()

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        self.add_popularity_baseline()
        ckpt = "best" if self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        if self.trainer.is_global_zero and ckpt:
            print(f"best checkpoint: {self.trainer.checkpoint_callback.best_model_path}")


    def add_popularity_baseline(self) -> None:
        """Show the most-popular baseline, under the same protocol and metrics, beside the
        test figures: a number means little without the floor it has to clear."""
        model = self.model
        # every process evaluates its shard and the evaluator sums across them, as in `test`: on
        # process 0 alone the sum would wait for the others forever
        if not (isinstance(model, Recommender) and self.datamodule is not None):
            return
        if type(model).__name__ == "PopularityRecommender":
            return
        from .evaluation import evaluate_popularity

        names = [type(metric).__name__ for metric in model.metric_objects]
        model.reference_results["popularity"] = evaluate_popularity(self.datamodule, "test", metrics=names, ks=model.ks)


_MISSING = object()


def _lookup(config: Any, names: Sequence[str]) -> Any:
    """A value of a parsed config (or of plain hyper-parameters) by its argument names, looked
    up inside ``init_args`` where a level is a component spec."""
    value = config
    for name in names:
        if not isinstance(value, (dict, Namespace)):
            return _MISSING
        if name in value:
            value = value[name]
        elif isinstance(value.get("init_args"), (dict, Namespace)) and name in value["init_args"]:
            value = value["init_args"][name]
        else:
            return _MISSING
    return value


def _comparable(value: Any) -> Any:
    """Values as the command line and a checkpoint both spell them: a component spec by its
    class's name (``CrossEntropyLoss``, ``attnrec.losses.CrossEntropyLoss`` or
    ``{"class_path": ...}``), sequences as lists."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        value = value["class_path"]
    if isinstance(value, str) and re.fullmatch(r"([A-Za-z_]\w*\.)*[A-Z]\w*", value):
        return value.rsplit(".", 1)[-1]
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(none)"
    value = value.as_dict() if isinstance(value, Namespace) else value
    return str(value["class_path"] if isinstance(value, dict) and "class_path" in value else value)


# ------------------------------------------------------------------- errors
ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (DataFormatError, "data error"),
    (CheckpointError, "checkpoint error"),
    (ConfigError, "configuration error"),
    (FileNotFoundError, "file not found"),
)


def explain(exc: BaseException, data_args: Mapping[str, Any] | None = None) -> CLIError | None:
    """The :class:`CLIError` for the first data, configuration or checkpoint error in the
    exception's chain, in CLI terms (:func:`in_cli_terms`); None for anything else, which
    keeps its traceback."""
    for cause in _chain(exc):
        if isinstance(cause, CLIError):
            return cause
        kind = next((kind for cls, kind in ERROR_KINDS if isinstance(cause, cls)), None)
        if kind is not None:  # a checkpoint's messages name its parameters, not the data's
            data = {} if isinstance(cause, CheckpointError) else data_args or {}
            return CLIError(kind, in_cli_terms(str(cause), data))
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def in_cli_terms(message: str, data_args: Mapping[str, Any]) -> str:
    """The data's arguments in an error message spoken as the flags that set them (Python's
    ``columns={...}`` or ``lower k_core`` become ``--data.init_args.columns={...}``,
    ``lower --data.init_args.k_core``), plus the flag that gave a file the message names."""
    names = sorted(data_args, key=len, reverse=True)
    if names:
        message = re.sub(rf"(?<![\w.-])({'|'.join(map(re.escape, names))})=", r"--data.init_args.\1=", message)
        spelled = [name for name in names if "_" in name]  # plain words ("path") are prose too
        if spelled:
            message = re.sub(rf"(?<![\w.-])({'|'.join(map(re.escape, spelled))})\b(?!=)", r"--data.init_args.\1", message)
    sources = [
        f"--data.init_args.{name}={value}"
        for name, value in data_args.items()
        if isinstance(value, str) and value in message and (name.endswith("path") or os.path.exists(value))
    ]
    if sources:
        message += f"\n(the file comes from {', '.join(sources)})"
    return message


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


def checkpoint_data(argv: Sequence[str]) -> list[str]:
    """``predict --ckpt_path FILE`` naming no data (neither ``--data...`` nor ``--config``)
    predicts for the users the checkpoint holds (:class:`~attnrec.data.serving.CheckpointDataModule`)
    instead of the default data: the arguments that say so, or none."""
    if not argv or argv[0] != "predict" or _config_paths(argv) or any(a.startswith("--data") for a in argv):
        return []
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
    if path is None and "--ckpt_path" in argv[:-1]:
        path = argv[argv.index("--ckpt_path") + 1]
    if path in (None, "last", "best", "hpc"):
        return []
    return ["--data=attnrec.data.serving.CheckpointDataModule", f"--data.init_args.ckpt_path={path}"]


def lightning_main(args: Sequence[str] | None = None, explain_errors: bool = True) -> AttnRecCLI:
    get_registry()  # import plugin classes so short names resolve
    argv = list(sys.argv[1:] if args is None else args)
    extra = checkpoint_data(argv)
    if extra:
        argv = [*argv, *extra]
        if args is None:  # from the command line, where DDP's launcher reads them back
            sys.argv = [sys.argv[0], *argv]
        else:
            args = argv
    kwargs = {"default_config_files": default_config_files(argv)}
    return AttnRecCLI(
        Recommender,
        RecDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=AttnRecArgumentParser,
        parser_kwargs={"prog": "attnrec", "epilog": EXTRA, **{name: kwargs for name in SUBCOMMANDS}},
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RandomState()]},  # added to the callbacks any config lists
        args=args,
        argv=argv,
        explain_errors=explain_errors,
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
    """Requests are built from the checkpoint alone (its users' histories, id maps and item
    titles); data is read only when ``--data`` names it."""
    parser = argparse.ArgumentParser(
        prog="attnrec recommend",
        description="Print top-k recommendations from a checkpoint written by `attnrec fit`. Users, their histories "
        "and item titles come from the checkpoint; the training data is not read.",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file")
    parser.add_argument("--user", action="append", default=[], help="raw user id (repeatable)")
    parser.add_argument(
        "--history", action="append", default=[], metavar="ITEM,ITEM,...",
        help="recommend after these raw item ids, oldest first, instead of a known user's history (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--data", metavar="CONFIG",
        help="read the --user histories from the data that this YAML's `data` section builds (the run's "
        "config.yaml, say) instead of the checkpoint",
    )  # fmt: skip
    parser.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument("--include_seen", action="store_true", help="do not exclude items the user already has")
    args = parser.parse_args(argv)
    if not args.user and not args.history:
        parser.error("give --user ID or --history ITEM,ITEM,... (both repeatable)")
    from rich.console import Console
    from rich.table import Table

    model = load_model(args.ckpt_path)
    catalog = model.catalog
    state = read_checkpoint(args.ckpt_path, check=False)  # checked when the model loaded
    serving = ServingData(state.get("attnrec_serving"), catalog, model.hparams.get("max_len"))
    users: ServingData | RecDataModule = serving
    if args.data:
        users = data_from_config(args.data, args.ckpt_path, catalog)
    elif args.user and serving.state is None:
        raise CheckpointError(
            f"{args.ckpt_path}: holds no users' histories (saved without a data module, or by an older attnrec); "
            "pass --history ITEM,ITEM,... or --data CONFIG"
        )
    requests = []
    try:
        requests += [(f"user {user}", users.user_batch([user])) for user in args.user]
        for history in args.history:
            items = [item.strip() for item in history.split(",") if item.strip()]
            requests.append((f"history {','.join(items)}", serving.history_batch([items])))
    except KeyError as exc:
        raise SystemExit(str(exc.args[0])) from None
    console = Console()
    for label, batch in requests:
        items, scores = model.recommend(batch, k=args.k, exclude_seen=not args.include_seen)
        count = int((batch["seen"] != 0).sum())
        table = Table(title=f"top {args.k} for {label} ({count} interactions)")
        for column in ("rank", "item", "title", "score"):
            table.add_column(column)
        for rank, (item, score) in enumerate(zip(items[0].tolist(), scores[0].tolist()), start=1):
            raw = catalog.raw_ids[item] if catalog.raw_ids else item
            table.add_row(str(rank), str(raw), catalog.title(item) if catalog.titles else "", f"{score:.3f}")
        console.print(table)
    return 0


def load_model(ckpt_path: str) -> Recommender:
    """The checkpoint's model on the CPU in eval mode, its plugins loaded; a component whose
    class cannot be imported is named with the likely fix."""
    get_registry()
    try:
        model = Recommender.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    except (argparse.ArgumentError, ImportError) as exc:  # a component's class cannot be imported here
        raise SystemExit(
            f"{ckpt_path}: cannot rebuild the model: {exc}\n"
            "Is the plugin that provides its components installed? (`attnrec plugins` lists them)"
        ) from None
    return model.eval()


# ------------------------------------------------------------------ export
def export_main(argv: Sequence[str]) -> int:
    """Item vectors with raw ids and the user encoder as ONNX, checked against torch."""
    parser = argparse.ArgumentParser(
        prog="attnrec export",
        description="Export a checkpoint's item vectors (Parquet, raw ids) and user encoder (torch.export -> ONNX, "
        "history -> query vector and scores; score = query . item vector). The ONNX file is checked against torch "
        "with onnxruntime. Needs the `export` extra (pip install 'attnrec[export]').",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file")
    parser.add_argument("--out", required=True, help="folder to write (created)")
    args = parser.parse_args(argv)
    from .export import ExportError, export_model

    model = load_model(args.ckpt_path)
    try:
        meta = export_model(model, args.out)
    except ExportError as exc:
        raise SystemExit(f"attnrec export: {args.ckpt_path}: {exc}") from None
    print(
        f"exported {meta['num_items']} items (dim {meta['dim']}) and the user encoder to {args.out}; "
        f"onnxruntime vs torch: max |diff| {meta['onnx_max_abs_diff']:.2e}"
    )
    return 0


# ------------------------------------------------------------------- serve
def serve_main(argv: Sequence[str]) -> int:
    """An HTTP service from a checkpoint alone (see :mod:`attnrec.service`)."""
    parser = argparse.ArgumentParser(
        prog="attnrec serve",
        description="Serve recommendations over HTTP: GET /health, POST /recommend with {\"user\": ID, \"k\": 10} or "
        "{\"history\": [ITEM, ...], \"k\": 10} (optionally \"exclude_seen\": false). Users, histories and item "
        "titles come from the checkpoint. Needs the `serve` extra (pip install 'attnrec[serve]').",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max_batch", type=int, default=32, help="most concurrent requests run as one batch")
    parser.add_argument("--max_wait_ms", type=float, default=2.0, help="how long a batch waits for more requests")
    parser.add_argument("--max_k", type=int, default=1000, help="longest list a request may ask for")
    parser.add_argument("--ann", choices=("hnsw", "ivf"), help="retrieve with a faiss index instead of exact ranking")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for the model (default 1: a serving batch is too small to gain from more, and the "
        "HTTP loop needs a core; see docs/serving.md)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    import torch
    import uvicorn

    torch.set_num_threads(args.threads)

    from .service import app_from_checkpoint

    app = app_from_checkpoint(
        args.ckpt_path, index_kind=args.ann, model=load_model(args.ckpt_path), max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_k=args.max_k,
    )  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def data_from_config(path: str, ckpt_path: str, catalog: ItemCatalog) -> RecDataModule:
    """The data module of a YAML config's ``data`` section (or of the whole file), checked to
    hold the checkpoint's catalogue."""
    from jsonargparse import ArgumentParser

    with open(path) as handle:
        content = yaml.safe_load(handle)
    section = content.get("data", content) if isinstance(content, dict) else content
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(RecDataModule, "data", required=True)
    try:
        data = parser.instantiate_classes(parser.parse_object({"data": section})).data
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{path}: its data section cannot be built: {exc}") from exc
    if data.catalog.state()["raw_ids"] != catalog.state()["raw_ids"]:
        raise CheckpointError(
            f"{ckpt_path}: trained on another catalogue than the data {path} builds ({catalog.num_items} items in "
            f"the checkpoint, {data.catalog.num_items} in the data, or other item ids)"
        )
    return data


class _DropAdvert(logging.Filter):
    """Lightning advertises its cloud logger on every run; the line says nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet() -> None:
    """Drop the notices every run printed that the user can do nothing about: Lightning's
    litlogger advert and torch's ``LeafSpec`` deprecation raised inside Lightning."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvert())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def main(argv: Sequence[str] | None = None) -> int:
    """``attnrec``. ``--debug`` anywhere (or ``ATTNREC_DEBUG=1``) shows the traceback of a
    data, configuration or checkpoint error instead of its one-screen explanation."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ATTNREC_DEBUG", "").lower() not in ("", "0", "false", "no")
    if "--debug" in argv:
        argv = [arg for arg in argv if arg != "--debug"]
        if from_command_line:
            sys.argv = [sys.argv[0], *argv]
    quiet()
    try:
        return _dispatch(argv, debug)
    except PluginError as exc:  # raised only under ATTNREC_STRICT_PLUGINS=1; the traceback adds nothing
        print(f"attnrec: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        explained = None if debug else explain(exc)
        if explained is None:
            raise
        command = argv[0] if argv and not argv[0].startswith("-") else "fit"
        print(f"attnrec {command}: {explained}\n(--debug or ATTNREC_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _dispatch(argv: list[str], debug: bool = False) -> int:
    if argv and argv[0] in ("--version", "-V"):
        from . import __version__

        print(f"attnrec {__version__}")
        return 0
    if argv and argv[0] == "plugins":
        return plugins_main(argv[1:])
    if argv and argv[0] == "recommend":
        return recommend_main(argv[1:])
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if argv and argv[0] == "serve":
        return serve_main(argv[1:])
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help", "--version"):
        if argv and not argv[0].startswith("-"):
            print(f"attnrec: unknown subcommand {argv[0]!r}; choose from {', '.join((*SUBCOMMANDS, *EXTRA_COMMANDS))}",
                  file=sys.stderr)
            return 2
        if not argv:
            argv = ["fit"]
    lightning_main(None if argv == sys.argv[1:] else argv, explain_errors=not debug)  # LightningCLI warns when given both
    return 0


if __name__ == "__main__":
    sys.exit(main())
