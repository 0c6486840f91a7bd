"""Keeps attnrec's own test suite, where this template lives under ``tests/``, from collecting
these tests: the plugin is not installed in attnrec's environment, so attnrec's
``tests/test_plugins.py`` runs them against a pip-installed copy instead. In a copy of the
template the plugin directory is the rootdir and this hook never ignores anything."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parent.parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return True if config.rootpath.resolve() != PLUGIN_ROOT else None
