"""The ``attnrec`` command end to end, with the third-party plugin packages from tests/
pip-installed outside the venv and found through their entry points.

Subprocesses where discovery in a fresh interpreter or a real training run matters; the rest
(help, print_config, strict mode, recommend, argument errors) in-process, which saves the
five seconds of imports per command. One trained checkpoint is shared.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from attnrec.cli import main

# In-process runs pass their arguments explicitly while sys.argv holds pytest's.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

PLUGIN_FLAGS = ("--model.user_encoder.attention=ALiBiAttention", "--model.scorer=LearnedTemperatureScorer")
SMALL_MODEL = (
    "--model.dim=32", "--model.lr=0.01", "--model.user_encoder.init_args.num_layers=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)  # fmt: skip
ALL_TEST_PLUGINS = "example,broken_import,broken_hook"


def metric(output: str, name: str) -> float:
    """A value from the metrics table that ``attnrec fit`` prints."""
    found = re.search(rf"│ {re.escape(name)}\s+│\s+([0-9.]+) │", output)
    assert found, f"no {name} in the output:\n{output}"
    return float(found.group(1))


@dataclass(frozen=True)
class Trained:
    checkpoint: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory, example_plugin, broken_plugin, attnrec_env, run_attnrec, tiny_data_args) -> Trained:
    """``attnrec fit`` with the example plugin's components named by short class name, the
    broken plugins installed alongside: 6 epochs on tiny data (a few seconds of CPU)."""
    root = tmp_path_factory.mktemp("fit")
    env = attnrec_env(example_plugin, broken_plugin, ATTNREC_LOAD_PLUGINS=ALL_TEST_PLUGINS)
    result = run_attnrec(
        "fit", *tiny_data_args, *SMALL_MODEL, *PLUGIN_FLAGS, "--trainer.max_epochs=6",
        f"--trainer.default_root_dir={root}", env=env, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"^best checkpoint: (.+\.ckpt)$", result.stdout, re.MULTILINE)
    assert found, result.stdout
    return Trained(Path(found.group(1)), result.stdout, result.stderr)


@pytest.fixture
def example_importable(monkeypatch: pytest.MonkeyPatch, example_plugin: Path, fresh_registry: Callable[[], Any]) -> None:
    """The example plugin on sys.path and the only entry-point plugin loaded, in-process."""
    monkeypatch.syspath_prepend(str(example_plugin))
    monkeypatch.setenv("ATTNREC_LOAD_PLUGINS", "example")


# ------------------------------------------------------------------- plugins
def test_plugins_lists_builtins_installed_plugins_and_failures(
    example_plugin, broken_plugin, attnrec_env, run_attnrec
) -> None:
    import attnrec

    result = run_attnrec("plugins", env=attnrec_env(example_plugin, broken_plugin))
    assert result.returncode == 0, result.stderr
    rows = result.stdout
    version = re.escape(attnrec.__version__)
    assert re.search(rf"│ attnrec\.builtin\s+│ attnrec\s+│ {version}\s+│ data\s+│ [^│]*SyntheticDataModule", rows)
    assert re.search(r"│ attentions\s+│ [^│]*MultiHeadAttention", rows)
    assert re.search(r"│ scorers\s+│ [^│]*DotScorer, CosineScorer, BilinearScorer, MLPScorer", rows)
    for name in ("ecommerce", "news", "graph", "video"):  # built-in domain plugins, found by entry point
        assert re.search(rf"│ {name}\s+│ attnrec\s+│", rows) or f"'{name}' from distribution 'attnrec'" in result.stderr
    assert re.search(r"│ losses\s+│ CrossEntropyLoss, SampledSoftmaxLoss, BCELoss, BPRLoss, GBCELoss", rows)
    assert re.search(r"│ example\s+│ attnrec-plugin-example\s+│ 0\.4\.0\s+│ attentions\s+│ ALiBiAttention", rows)
    assert re.search(r"│ scorers\s+│ LearnedTemperatureScorer \(cosine with learned temperature\)", rows)
    assert "HalfRegisteredScorer" not in rows
    broken = "from distribution 'attnrec-plugin-broken' failed"
    assert f"failed: plugin 'broken_import' {broken}: ModuleNotFoundError" in result.stderr
    assert f"failed: plugin 'broken_hook' {broken}: RuntimeError" in result.stderr


def test_strict_mode_makes_plugins_and_fit_fail(example_plugin, broken_plugin, monkeypatch, capsys, fresh_registry) -> None:
    monkeypatch.syspath_prepend(str(example_plugin))
    monkeypatch.syspath_prepend(str(broken_plugin))
    monkeypatch.setenv("ATTNREC_LOAD_PLUGINS", ALL_TEST_PLUGINS)
    monkeypatch.setenv("ATTNREC_STRICT_PLUGINS", "1")
    for command in (["plugins"], ["fit", *PLUGIN_FLAGS, "--trainer.max_epochs=1"]):
        monkeypatch.setattr("attnrec.plugins._REGISTRY", None)
        assert main(command) == 1, command
        captured = capsys.readouterr()
        expected = "attnrec: plugin 'broken_hook' from distribution 'attnrec-plugin-broken' failed: RuntimeError"
        assert captured.err.startswith(expected)
        assert "Traceback" not in captured.err and "test metrics" not in captured.out


# ----------------------------------------------------------------------- fit
def test_fit_trains_plugin_components_named_by_short_class_name(trained: Trained, tiny_data) -> None:
    from attnrec.data import SyntheticDataModule
    from attnrec.evaluation import evaluate_popularity

    assert trained.checkpoint.is_file()
    config = (trained.checkpoint.parent.parent / "config.yaml").read_text()
    assert "class_path: attnrec_example_plugin.ALiBiAttention" in config
    assert "class_path: attnrec_example_plugin.LearnedTemperatureScorer" in config
    assert "'broken_import' from distribution 'attnrec-plugin-broken'" in trained.stderr  # reported, not fatal
    assert re.search(r"^protocol: .*candidates=full", trained.stdout, re.MULTILINE)  # results carry their protocol
    popularity = evaluate_popularity(SyntheticDataModule(**tiny_data), "test", metrics=("NDCG",), ks=(10,))["NDCG@10"]
    model = metric(trained.stdout, "NDCG@10")
    assert model > 1.3 * popularity, f"NDCG@10 {model:.4f} does not beat popularity {popularity:.4f} on planted structure"
    # the table shows the popularity baseline under the same protocol beside the model, and a legend
    beside = re.search(r"│ NDCG@10\s+│\s+[0-9.]+ │\s+([0-9.]+) │", trained.stdout)
    assert beside and float(beside.group(1)) == pytest.approx(popularity, abs=1e-4), trained.stdout
    assert "HR@k = a held-out item in the top k" in " ".join(trained.stdout.split())
    assert "litlogger" not in trained.stdout + trained.stderr and "LeafSpec" not in trained.stderr


def test_fit_with_the_example_plugin_config(example_plugin, attnrec_env, run_attnrec, tiny_data_args, tmp_path) -> None:
    config = example_plugin / "attnrec_example_plugin" / "configs" / "alibi_sasrec.yaml"
    assert config.is_file(), "the config must ship as package data"
    result = run_attnrec(
        "fit", "--config", str(config), *tiny_data_args, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", env=attnrec_env(example_plugin, ATTNREC_LOAD_PLUGINS="example"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = tmp_path.glob("lightning_logs/version_0/config.yaml")
    recorded = saved.read_text()
    assert re.search(r"class_path: attnrec_example_plugin.ALiBiAttention\n\s+init_args:\n\s+num_heads: 4", recorded)
    assert "learn_slopes: true" in recorded and "class_path: attnrec_example_plugin.LearnedTemperatureScorer" in recorded
    assert list(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))


TOGETHER = """
import os
import time
from pathlib import Path

from lightning.fabric.loggers import csv_logs
from lightning.pytorch.callbacks import Callback

# Imported while the command line is parsed: each run waits here for the other, so both go on
# together; and a run folder chosen by Lightning's logger is made a second later, as on a slow
# shared file system.
_arrived = Path(os.environ["RUNS_ARRIVED"])
(_arrived / str(os.getpid())).touch()
_deadline = time.monotonic() + 120
while len(list(_arrived.iterdir())) < 2 and time.monotonic() < _deadline:
    time.sleep(0.005)
_next_version = csv_logs.CSVLogger._get_next_version


def _slow_next_version(self):
    version = _next_version(self)
    time.sleep(1.0)
    return version


csv_logs.CSVLogger._get_next_version = _slow_next_version


class Together(Callback):
    pass
"""


def test_concurrent_runs_in_one_folder_get_folders_of_their_own(attnrec_env, tiny_data_args, tmp_path) -> None:
    (tmp_path / "together.py").write_text(TOGETHER)
    (tmp_path / "arrived").mkdir()
    env = attnrec_env(tmp_path, ATTNREC_LOAD_PLUGINS="", OMP_NUM_THREADS="1", RUNS_ARRIVED=str(tmp_path / "arrived"))
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "attnrec.cli", "fit", *tiny_data_args, f"--model.dim={dim}", "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
             "--trainer.enable_progress_bar=false", "--trainer.callbacks+=together.Together"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for dim in (16, 24)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outputs)
    folders = sorted((tmp_path / "lightning_logs").iterdir())
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    dims = []
    for folder in folders:
        dims += re.findall(r"^    dim: (\d+)$", (folder / "config.yaml").read_text(), re.MULTILINE)
        with (folder / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len([row for row in rows if row["test/NDCG@10"]]) == 1 and len(rows) == 2, rows  # validation, test
        assert len(list((folder / "checkpoints").glob("best-*.ckpt"))) == 1
    assert sorted(dims) == ["16", "24"]


def test_private_fit_with_a_popularity_prior_from_the_command_line(attnrec_env, run_attnrec, tiny_data_args, tmp_path) -> None:
    """The flags docs/privacy.md gives: the callback by short name, the prior in the model's item bias."""
    env = attnrec_env(ATTNREC_LOAD_PLUGINS="", OMP_NUM_THREADS="1")
    result = run_attnrec(
        "fit", *tiny_data_args, *SMALL_MODEL, "--model.item_bias=true", "--trainer.max_epochs=2",
        "--trainer.callbacks+=DifferentialPrivacy", "--trainer.callbacks.epsilon=8",
        "--trainer.callbacks.prior_noise_multiplier=5", f"--trainer.default_root_dir={tmp_path}", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    protocol = " ".join(result.stdout.split())
    assert re.search(r"privacy=user-level DP-SGD \(epsilon=(7\.9\d|8) at delta=", protocol), result.stdout
    assert "popularity prior by a Gaussian count query, noise multiplier 5" in protocol


# -------------------------------------------------------------------- errors
def test_a_data_error_is_one_screen_in_cli_terms(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "log.csv").write_text("user,item,timestamp\n1,10,5\n1,11,yesterday\n")
    (tmp_path / "cols.csv").write_text("user,product\n1,10\n")
    for path, expected in [
        ("log.csv", r"log\.csv, (row|line) 3, column 'timestamp': 'yesterday' "),
        ("cols.csv", r"cols\.csv: missing column 'item'.* Pass --data\.init_args\.columns=\{'item': '<your column>'\} "),
    ]:  # the data's messages, with the Python API's columns= spoken as the flag
        assert main(["fit", "--data=InteractionDataModule", f"--data.path={path}"]) == 1
        error = capsys.readouterr().err
        assert re.match(f"attnrec fit: data error: {expected}", error), error
        assert f"(the file comes from --data.init_args.path={path})" in error
        assert "Traceback" not in error and len(error.splitlines()) <= 4, error
    with pytest.raises(Exception, match="is neither a number nor a date") as raised:
        main(["fit", "--data=InteractionDataModule", "--data.path=log.csv", "--debug"])
    assert type(raised.value).__name__ == "DataFormatError"  # the original, with its traceback
    monkeypatch.setenv("ATTNREC_DEBUG", "1")
    with pytest.raises(Exception, match="is neither a number nor a date"):
        main(["fit", "--data=InteractionDataModule", "--data.path=log.csv"])


def test_a_configuration_error_is_one_screen(capsys) -> None:
    assert main(["fit", "--data.num_items=50"]) == 1  # a class refuses its arguments
    error = capsys.readouterr().err
    assert error.startswith("attnrec fit: configuration error: ") and "max_length must be at most half" in error
    assert "Traceback" not in error and len(error.splitlines()) <= 4, error
    with pytest.raises(SystemExit) as done:  # an argument that does not parse: no 40-line usage in front
        main(["fit", "--model.dim=abc"])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("attnrec fit: configuration error: ") and "Got value: abc" in error
    assert "usage:" not in error and len(error.splitlines()) <= 15, error


def test_print_config_and_help_cover_plugin_components(example_importable, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["fit", *PLUGIN_FLAGS, "--model.scorer.init_temperature=0.05", "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert re.search(r"class_path: attnrec_example_plugin.ALiBiAttention\n\s+init_args:\n\s+num_heads: 2", printed)
    scorer = r"class_path: attnrec_example_plugin.LearnedTemperatureScorer\n\s+init_args:\n\s+init_temperature: 0.05"
    assert re.search(scorer, printed)
    for flag, name, expected in [
        ("--model.user_encoder.attention.help", "ALiBiAttention", ("linear recency bias", "--attention.learn_slopes")),
        ("--model.scorer.help", "LearnedTemperatureScorer", ("learned scale", "--scorer.init_temperature")),
        ("--model.user_encoder.help", "TransformerUserEncoder", ("TransformerUserEncoder", "--user_encoder.num_layers")),
    ]:
        with pytest.raises(SystemExit):
            main(["fit", flag, name])
        text = capsys.readouterr().out
        assert all(part in text for part in expected), f"{flag} {name}:\n{text}"


def _printed_config(capsys, *args: str) -> dict:
    import yaml

    with pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_a_named_model_keeps_its_own_defaults(capsys) -> None:
    """The default model config applies only when no model is named: GraphRecommender's own
    signature decides its encoder, loss and schedule, not the default transformer's."""
    graph = _printed_config(capsys, "--model", "GraphRecommender")["model"]
    assert graph["class_path"].endswith("GraphRecommender")
    assert graph["init_args"]["item_encoder"]["class_path"].endswith("LightGCNEncoder")
    assert graph["init_args"]["user_encoder"]["class_path"].endswith("GraphUserEncoder")
    assert graph["init_args"]["loss"].endswith("BPRLoss") and graph["init_args"]["schedule"] == "constant"
    default = _printed_config(capsys, "--model.dim=32")["model"]  # tunes the default model, names none
    assert default["class_path"] == "attnrec.Recommender" and default["init_args"]["dim"] == 32
    assert default["init_args"]["lr"] == 0.002 and default["init_args"]["user_encoder"]["class_path"].endswith(
        "TransformerUserEncoder"
    )


def test_max_len_is_set_once_on_the_data(capsys, tiny_data_args, tmp_path) -> None:
    """Raising the data's max_len alone used to crash (the encoder kept 50)."""
    args = [a for a in tiny_data_args if "max_len" not in a]
    assert "max_len" not in _printed_config(capsys, *args)["model"]["init_args"]  # linked, not configurable
    main(["fit", *args, "--data.max_len=60", "--model.dim=16", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
          "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
          f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert "max_len=60" in capsys.readouterr().out


def test_top_level_help_names_the_extra_subcommands(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "attnrec plugins" in text and "attnrec recommend" in text and "fit" in text
    assert "attnrec predict" in text and "attnrec export" in text and "attnrec serve" in text


def test_a_misspelled_component_name_gets_the_close_registered_ones(capsys, fresh_registry, monkeypatch) -> None:
    monkeypatch.setenv("ATTNREC_LOAD_PLUGINS", "")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model.scorer=DotScorr"])
    assert done.value.code == 2
    assert "'DotScorr' is not a registered component; did you mean DotScorer (scorers)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--model.user_encoder.attention=Zebra"])
    assert re.search(r"'Zebra' is not a registered component.*\n\s+data: .*SyntheticDataModule", capsys.readouterr().err)


def test_version_prints_the_installed_version(capsys) -> None:
    import attnrec

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"attnrec {attnrec.__version__}"


def test_unknown_subcommand_is_a_clear_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    error = capsys.readouterr().err
    assert "unknown subcommand 'frobnicate'" in error
    assert "fit, validate, test, predict, recommend, export, serve, plugins" in error


# ----------------------------------------------------------------- recommend
def test_recommend_prints_unseen_items_with_titles(
    trained: Trained, example_importable, tiny_data, capsys, monkeypatch
) -> None:
    from attnrec.data import SyntheticDataModule

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["recommend", "--ckpt_path", str(trained.checkpoint), "--user", "1", "--user", "2", "-k", "5"]) == 0
    tables = re.split(r"top 5 for user ", capsys.readouterr().out)[1:]
    assert [table.split(" ")[0] for table in tables] == ["1", "2"]
    data = SyntheticDataModule(**tiny_data)
    for user, table in zip(("1", "2"), tables):
        rows = re.findall(r"│ (\d+)\s+│ (\d+)\s+│ (.+?)\s+│ (-?[0-9.]+) │", table)
        assert [int(rank) for rank, *_ in rows] == [1, 2, 3, 4, 5]
        for _, item, title, _ in rows:
            assert title.endswith(f" item {item}"), f"title {title!r} of item {item}"  # the generator's titles
        scores = [float(score) for *_, score in rows]
        assert scores == sorted(scores, reverse=True)
        seen = {str(data.catalog.raw_ids[i]) for i in data.user_history(user).tolist()}
        assert not seen & {item for _, item, _, _ in rows}, "recommend must exclude the user's own items"


def test_recommend_unknown_user_is_a_clear_error(trained: Trained, example_importable) -> None:
    with pytest.raises(SystemExit, match=r"user 'nobody' is not in synthetic-shop"):
        main(["recommend", "--ckpt_path", str(trained.checkpoint), "--user", "nobody"])


def test_recommend_without_the_plugin_names_the_missing_module(trained: Trained, monkeypatch, fresh_registry) -> None:
    for module in [name for name in sys.modules if name.split(".")[0] == "attnrec_example_plugin"]:
        monkeypatch.delitem(sys.modules, module)  # as in an environment where the plugin is not installed
    monkeypatch.setenv("ATTNREC_LOAD_PLUGINS", "")
    expected = r"(?s)cannot rebuild the model: .*No module named 'attnrec_example_plugin'.*Is the plugin .* installed"
    with pytest.raises(SystemExit, match=expected):
        main(["recommend", "--ckpt_path", str(trained.checkpoint), "--user", "1"])
