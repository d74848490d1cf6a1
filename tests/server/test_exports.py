"""The ASGI and server packages export what they define, sorted."""

from __future__ import annotations

from types import ModuleType

import pytest

from sessionstore import asgi, server


def _isort_style(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("package", [asgi, server])
def test_all_is_sorted_and_complete(package: ModuleType) -> None:
    """Every public name of the package is in `__all__`, sorted, and nothing else."""
    public = {n for n in dir(package) if not n.startswith("_")} - {"annotations"}
    modules = {name for name in public if isinstance(getattr(package, name), ModuleType)}
    assert sorted(package.__all__, key=_isort_style) == package.__all__
    assert set(package.__all__) == public - modules
