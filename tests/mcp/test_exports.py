"""`sessionstore.mcp`'s public API: `__all__` is complete, each name documented."""

from __future__ import annotations

import inspect
from typing import get_origin

import sessionstore.mcp as package


def test_all_is_complete_and_documented() -> None:
    """Every public name is exported (in ruff's RUF022 order), and each class and
    function has a docstring."""
    public = {n for n in dir(package) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if inspect.ismodule(getattr(package, n))}
    assert set(package.__all__) == public - modules
    # Generic aliases (StateMutator) pass for classes but carry no docstring of their own.
    objects = [getattr(package, n) for n in package.__all__]
    callables = [o for o in objects if inspect.isfunction(o) or inspect.isclass(o)]
    undocumented = [o for o in callables if get_origin(o) is None and not o.__doc__]
    assert undocumented == []
