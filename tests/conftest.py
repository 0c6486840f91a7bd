"""Shared fixtures.

Plugin packages under ``tests/`` (``plugin_example``, ``plugin_broken``) are pip-installed
into a session-scoped ``--target`` directory, never into the venv, so subprocesses discover
them through their entry points only when a test puts that directory on ``PYTHONPATH``
(``attnrec_env``), and in-process tests only inside ``monkeypatch.syspath_prepend``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

TESTS = Path(__file__).parent
SWITCHES = ("ATTNREC_LOAD_PLUGINS", "ATTNREC_DISABLE_PLUGINS", "ATTNREC_STRICT_PLUGINS")

TINY_DATA: dict[str, Any] = dict(num_users=200, num_items=150, max_len=20, batch_size=64, eval_batch_size=256)
"""SyntheticDataModule arguments for tests: a second per epoch. (The generator needs
``num_items >= 120``: sequences of up to 60 distinct items.)"""


@pytest.fixture(scope="session")
def install_plugin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``install_plugin("plugin_example") -> site dir``: pip-installs ``tests/<name>`` (once per
    session) into its own directory, from a copy so no build files land in the repository."""
    installed: dict[str, Path] = {}

    def install(name: str) -> Path:
        if name not in installed:
            source = tmp_path_factory.mktemp(f"{name}-src") / name
            shutil.copytree(TESTS / name, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            target = tmp_path_factory.mktemp(f"{name}-site")
            command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet"]
            # Build offline with the venv's setuptools; venvs of Python >= 3.12 have none, and
            # then pip fetches one into an isolated build environment.
            if importlib.util.find_spec("setuptools") is not None:
                command += ["--no-build-isolation", "--no-index"]
            command += ["--target", str(target), str(source)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"pip could not install tests/{name}:\n{result.stdout}\n{result.stderr}")
            installed[name] = target
        return installed[name]

    return install


@pytest.fixture(scope="session")
def example_plugin(install_plugin: Callable[[str], Path]) -> Path:
    """Site dir of ``attnrec-plugin-example`` (entry point ``example``)."""
    return install_plugin("plugin_example")


@pytest.fixture(scope="session")
def broken_plugin(install_plugin: Callable[[str], Path]) -> Path:
    """Site dir of ``attnrec-plugin-broken`` (entry points ``broken_import``, ``broken_hook``,
    ``broken_clash``)."""
    return install_plugin("plugin_broken")


@pytest.fixture(scope="session")
def attnrec_env() -> Callable[..., dict[str, str]]:
    """``attnrec_env(*site_dirs, **variables) -> env`` for subprocesses: the site dirs on
    ``PYTHONPATH``, no inherited ``ATTNREC_*`` switches (CI exports ``ATTNREC_STRICT_PLUGINS=1``),
    and a wide terminal so rich tables do not fold names."""

    def make(*site_dirs: Path, **variables: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in SWITCHES}
        paths = [str(path) for path in site_dirs] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["COLUMNS"] = "200"
        env.update(variables)
        return env

    return make


@pytest.fixture(scope="session")
def run_attnrec() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_attnrec(*args, env=None, cwd=None, timeout=300)``: the ``attnrec`` command in a
    fresh interpreter (``python -m attnrec.cli``), output captured as text."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300):
        return subprocess.run(
            [sys.executable, "-m", "attnrec.cli", *args],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    return run


@pytest.fixture
def tiny_data() -> dict[str, Any]:
    """Keyword arguments of a tiny ``SyntheticDataModule`` (a copy; tests may change it)."""
    return dict(TINY_DATA)


@pytest.fixture(scope="session")
def tiny_data_args() -> tuple[str, ...]:
    """The same tiny data as CLI flags (``--data.num_users=200`` ...)."""
    return tuple(f"--data.{key}={value}" for key, value in TINY_DATA.items())


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """A clean slate for plugin loading: no ``ATTNREC_*`` switches and no loaded registry, so
    the next ``get_registry()`` (returned) loads afresh; the session's registry comes back
    afterwards."""
    import attnrec.plugins

    for variable in SWITCHES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(attnrec.plugins, "_REGISTRY", None)
    return attnrec.plugins.get_registry
