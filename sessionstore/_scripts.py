"""Lua scripts: loading, calling by SHA, and batching several calls into one round trip.

Each part keeps its scripts beside its modules, in ``<package>/lua/<name>.lua``
(the store's in ``store/lua/``, the breaker's in ``breaker/lua/``...), each
with a header that states its KEYS, ARGV and reply, and declares them with a
`ScriptLibrary`. ``_prelude.lua`` beside this module (clock, event and
tombstone helpers) is prepended to every script, so a script is
self-contained on the server. Scripts are called with EVALSHA; on NOSCRIPT (a
restarted or failed-over Redis) the same call is re-sent as EVAL, which also
caches it. Why not redis-py's ``register_script``: see docs/development.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis.exceptions as rex

from ._redis import RedisClient, backend_errors

Arg = str | int | float | bytes


@dataclass(frozen=True)
class LuaScript:
    """One Lua script and its SHA1.

    .. versionadded:: 0.1
    """

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


def _prelude() -> str:
    return resources.files(__package__).joinpath("_prelude.lua").read_text("utf-8")


#: Every library declared so far (one per part that has scripts), for `load_all`.
_LIBRARIES: list[ScriptLibrary] = []


class ScriptLibrary:
    """The scripts of one package: ``<package>/lua/<name>.lua``, each read once.

    A script named ``<family>_<rest>`` also gets its family's helpers,
    ``lua/_<family>.lua``, after the prelude when that file exists (the
    breaker scripts share ``breaker/lua/_breaker.lua``). Declared once per
    package, at import (the sources are constants, not connections).
    """

    def __init__(self, package: str) -> None:
        self._dir = resources.files(package).joinpath("lua")
        self._cache: dict[str, LuaScript] = {}
        _LIBRARIES.append(self)

    def _read(self, name: str) -> str:
        return self._dir.joinpath(f"{name}.lua").read_text("utf-8")

    def __call__(self, name: str) -> LuaScript:
        """The script ``lua/<name>.lua`` with the prelude (and family helpers) prepended."""
        found = self._cache.get(name)
        if found is None:
            family = self._dir.joinpath(f"_{name.partition('_')[0]}.lua")
            helpers = family.read_text("utf-8") + "\n" if "_" in name and family.is_file() else ""
            source = _prelude() + "\n" + helpers + self._read(name)
            found = self._cache[name] = LuaScript(name, source)
        return found

    def all(self) -> list[LuaScript]:
        """Every script of the package (helper files are part of each, not one themselves)."""
        names = sorted(
            entry.name.removesuffix(".lua")
            for entry in self._dir.iterdir()
            if entry.name.endswith(".lua") and not entry.name.startswith("_")
        )
        return [self(name) for name in names]


def all_scripts() -> list[LuaScript]:
    """Every script of every library declared so far."""
    return [lua for library in _LIBRARIES for lua in library.all()]


async def load_all(client: RedisClient) -> int:
    """SCRIPT LOAD every script (on a cluster: on every primary); returns how many.

    Call it at start-up so hot-path calls never pay the NOSCRIPT fallback;
    after a Redis restart the fallback reloads each script on first use.
    """
    scripts = all_scripts()
    with backend_errors("SCRIPT LOAD"):
        for lua in scripts:
            await client.script_load(lua.source)
    return len(scripts)


async def call(client: RedisClient, lua: LuaScript, keys: list[str], args: list[Arg]) -> Any:
    """Run `lua` in one round trip (two only after a NOSCRIPT)."""
    with backend_errors(lua.name):
        try:
            return await client.execute_command("EVALSHA", lua.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            return await client.execute_command("EVAL", lua.source, len(keys), *keys, *args)


class Batch:
    """Several script calls and commands sent together: one round trip per node.

    On a single Redis that is one round trip; on a cluster the commands for
    different nodes are sent concurrently. The calls are not atomic together:
    each script is atomic on its own.
    """

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._calls: list[tuple[LuaScript | None, tuple[Any, ...]]] = []

    def script(self, lua: LuaScript, keys: list[str], args: list[Arg]) -> int:
        """Queue a script call; returns its index in `execute`'s reply."""
        self._calls.append((lua, ("EVALSHA", lua.sha, len(keys), *keys, *args)))
        return len(self._calls) - 1

    def command(self, *args: Any) -> int:
        """Queue a plain command; returns its index in `execute`'s reply."""
        self._calls.append((None, args))
        return len(self._calls) - 1

    async def execute(self) -> list[Any]:
        """Send everything; raise the first error other than NOSCRIPT."""
        if not self._calls:
            return []
        names = ",".join(sorted({lua.name for lua, _ in self._calls if lua}) or ["commands"])
        with backend_errors(names):
            pipe = self._client.pipeline(transaction=False)
            for _, args in self._calls:
                pipe.execute_command(*args)
            replies = await pipe.execute(raise_on_error=False)
            for index, reply in enumerate(replies):
                lua, args = self._calls[index]
                if isinstance(reply, rex.NoScriptError) and lua is not None:
                    replies[index] = await self._client.execute_command(
                        "EVAL", lua.source, *args[2:]
                    )
                elif isinstance(reply, Exception):
                    raise reply
        return list(replies)
