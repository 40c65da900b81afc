"""The public API: every module of the package declares ``__all__`` and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bridge

MODULES = sorted(m.name for m in pkgutil.walk_packages(bridge.__path__, "bridge.") if m.name != "bridge.__main__")


def test_the_package_is_walked() -> None:
    assert {"bridge.cli", "bridge.evaluate.eligibility", "bridge.client", "bridge.service.app"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        is_package = bool(module.__file__ and module.__file__.endswith("__init__.py"))
        assert is_package, f"{name} has no __all__"
        return
    assert len(exported) == len(set(exported)), f"{name}: duplicate names in __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}: __all__ names that do not exist: {missing}"


def test_top_level_exports() -> None:
    assert bridge.__all__ == ["__version__"]  # the trial's id and ruleset version are the Trial's (load_trial)
