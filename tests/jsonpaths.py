"""Paths into parsed JSON, for the tests that mutate resources (the fast validation's and its memory's)."""

from __future__ import annotations

import copy
from typing import Any


def paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below ``node``: dict keys and list indexes, parents before children."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*path, i))
    return found


def get(node: Any, path: tuple[Any, ...]) -> Any:
    """The value at ``path``."""
    for step in path:
        node = node[step]
    return node


def put(node: Any, path: tuple[Any, ...], value: Any) -> None:
    """Sets a copy of ``value`` at ``path``."""
    get(node, path[:-1])[path[-1]] = copy.deepcopy(value)
