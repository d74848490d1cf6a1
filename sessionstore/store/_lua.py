"""The store's Lua scripts (``store/lua/``), one per atomic transition."""

from __future__ import annotations

from .._scripts import ScriptLibrary

#: ``script("create")`` and so on: the store's scripts with the prelude prepended.
script = ScriptLibrary("sessionstore.store")
