"""``python -m sessionstore``: the same as the ``sessionstore`` command."""

from __future__ import annotations

from .cli import main

main()
