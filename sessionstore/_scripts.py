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
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis.exceptions as rex

from ._redis import CommandSender, RedisClient, backend_errors, command_sender, is_cluster

Arg = str | int | float | bytes


#: The order of `SessionKeys.ordered()`, which single-session scripts are called with.
_SESSION_KEYS = (
    "record",
    "tomb",
    "lock",
    "upstreams",
    "expiry",
    "stats",
    "events",
    "mcp",
    "mcpget",
)
#: A script header naming the session keys a script uses.
_KEYS_HEADER = re.compile(r"^-- KEYS: ([a-z, ]+) \(of the session\)$", re.MULTILINE)


@dataclass(frozen=True)
class LuaScript:
    """One Lua script and its SHA1.

    .. versionadded:: 0.1
    """

    name: str
    source: str
    #: Positions in the session's keys of the keys this script is sent (None: all).
    key_picks: tuple[int, ...] | None = None
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    def keys_for(self, keys: list[str]) -> list[str]:
        """The keys to send: the subset this script uses, when it is given all the keys
        of one session (Redis checks and copies each key of a call, so fewer cost less)."""
        if self.key_picks is None or len(keys) != len(_SESSION_KEYS):
            return keys
        return [keys[i] for i in self.key_picks]


#: A Lua comment to the end of its line (no prelude string holds ``--``).
_COMMENT = re.compile(r"--[^\n]*")
#: The name a prelude definition (``local function name`` or ``local NAME =``) defines.
_DEFINES = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)


def _used_prelude(prelude: str, code: str, provided: frozenset[str] = frozenset()) -> str:
    """The prelude's definitions that `code` uses, directly or through one another, in
    their order, but for those `provided` otherwise. Every EVALSHA runs its script's
    whole source, defining each helper anew (a closure per helper per call), so a script
    carries only the ones it calls."""
    chunks = {}
    for chunk in prelude.split("\n\n"):
        defined = _DEFINES.search(chunk)
        if defined and defined.group(1) not in provided:
            chunks[defined.group(1)] = chunk

    def uses(text: str) -> set[str]:
        # Code only: a helper a comment names (`slide` refers to `write_session`) is
        # not one the script runs.
        code = _COMMENT.sub("", text)
        return {word for word in re.findall(r"\w+", code) if word in chunks}

    needed = uses(code)
    frontier = set(needed)
    while frontier:
        frontier = set().union(*(uses(chunks[name]) for name in frontier)) - needed
        needed |= frontier
    return "\n\n".join(chunk for name, chunk in chunks.items() if name in needed)


def _session_keys(names: list[str]) -> str:
    """A script's own ``session_keys``, for the keys its header names: one table
    constructor (the prelude's, for scripts that take all nine keys, fills a table in a
    loop over the names, several times the Redis time)."""
    fields = ", ".join(f"{name} = KEYS[first + {i}]" for i, name in enumerate(names))
    return f"local function session_keys(first)\n  first = first or 1\n  return {{{fields}}}\nend\n"


def _compose(name: str, prelude: str, helpers: str, body: str) -> LuaScript:
    """A script's source: the session keys it declares, the prelude helpers it uses,
    its family's helpers, its body."""
    header = _KEYS_HEADER.search(body)
    if header is None:
        used = _used_prelude(prelude, helpers + body)
        return LuaScript(name, used + "\n" + helpers + body)
    names = [n.strip() for n in header.group(1).split(",")]
    used = _used_prelude(prelude, helpers + body, provided=frozenset({"session_keys"}))
    source = _session_keys(names) + used + "\n" + helpers + body
    return LuaScript(name, source, tuple(_SESSION_KEYS.index(n) for n in names))


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
            found = self._cache[name] = _compose(name, _prelude(), helpers, self._read(name))
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
    keys = lua.keys_for(keys)
    send = command_sender(client)
    with backend_errors(lua.name):
        if send is not None:
            reply = (await send([("EVALSHA", lua.sha, len(keys), *keys, *args)]))[0]
            if isinstance(reply, rex.NoScriptError):
                reply = (await send([("EVAL", lua.source, len(keys), *keys, *args)]))[0]
            if isinstance(reply, Exception):
                raise reply
            return reply
        try:
            return await client.execute_command("EVALSHA", lua.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            return await client.execute_command("EVAL", lua.source, len(keys), *keys, *args)


@dataclass(frozen=True)
class ScriptCall:
    """One script call to be sent with other commands (`Batch.add`), e.g. a write that
    rides with a lease's return.

    .. versionadded:: 0.1
    """

    lua: LuaScript
    keys: list[str]
    args: list[Arg]


#: What `Batch.add` queues: a plain command (its arguments) or a script call.
BatchCall = tuple[Arg, ...] | ScriptCall


class Batch:
    """Several script calls and commands sent together: one round trip per node.

    On a single Redis that is one round trip, one write on the client's
    multiplexed connection (`_redis.command_sender`); on a cluster redis-py's
    cluster pipeline sends the commands for different nodes concurrently. The
    calls are not atomic together: each script is atomic on its own.
    """

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._calls: list[tuple[LuaScript | None, tuple[Any, ...]]] = []
        self._near: dict[int, str] = {}
        self._rereads: list[int] = []

    def script(self, lua: LuaScript, keys: list[str], args: list[Arg]) -> int:
        """Queue a script call; returns its index in `execute`'s reply."""
        keys = lua.keys_for(keys)
        self._calls.append((lua, ("EVALSHA", lua.sha, len(keys), *keys, *args)))
        return len(self._calls) - 1

    def add(self, call: BatchCall) -> int:
        """Queue a script call or a plain command; returns its index in `execute`'s reply."""
        if isinstance(call, ScriptCall):
            return self.script(call.lua, call.keys, call.args)
        return self.command(*call)

    def command(self, *args: Any, near: str | None = None, reread: bool = False) -> int:
        """Queue a plain command; returns its index in `execute`'s reply.

        `near`: a key whose node a keyless command (TIME) is sent to on a cluster, so
        it rides in the same write as the commands on that key.
        `reread`: a read that must see what the scripts queued before it did. A script
        Redis did not know (NOSCRIPT: after a restart or failover) runs again after the
        whole batch, so such a read is then sent again after it (a write never is).
        """
        self._calls.append((None, args))
        index = len(self._calls) - 1
        if near is not None:
            self._near[index] = near
        if reread:
            self._rereads.append(index)
        return index

    async def execute(self) -> list[Any]:
        """Send everything; raise the first error other than NOSCRIPT."""
        if not self._calls:
            return []
        send = command_sender(self._client)
        with backend_errors(self):
            if send is not None:
                replies = await send([args for _, args in self._calls])
            else:
                replies = await self._pipelined()
            first_reload = len(replies)
            for index, reply in enumerate(replies):
                lua, args = self._calls[index]
                if isinstance(reply, rex.NoScriptError) and lua is not None:
                    first_reload = min(first_reload, index)
                    replies[index] = reply = await self._again(send, "EVAL", lua.source, *args[2:])
                if isinstance(reply, Exception):
                    raise reply
            for index in self._rereads:
                if index > first_reload:
                    replies[index] = reply = await self._again(send, *self._calls[index][1])
                    if isinstance(reply, Exception):
                        raise reply
        return list(replies)

    async def _again(self, send: CommandSender | None, *args: Any) -> Any:
        """Send one command after the batch."""
        if send is not None:
            return (await send([args]))[0]
        return await self._client.execute_command(*args)

    def __str__(self) -> str:
        """The scripts in the batch, for an error message (built only then)."""
        return ",".join(sorted({lua.name for lua, _ in self._calls if lua}) or ["commands"])

    async def _pipelined(self) -> list[Any]:
        """Send everything through redis-py's pipeline (a cluster, or a client that
        `create_client` did not make)."""
        targets = await self._targets()
        pipe = self._client.pipeline(transaction=False)
        for index, (_, args) in enumerate(self._calls):
            if index in targets:
                pipe.execute_command(*args, target_nodes=targets[index])
            else:
                pipe.execute_command(*args)
        return list(await pipe.execute(raise_on_error=False))

    async def _targets(self) -> dict[int, Any]:
        """On a cluster, the node of each `near` key (the slot map is learnt first)."""
        client = self._client
        if not self._near or not is_cluster(client):
            return {}
        await client.initialize()
        return {
            index: client.get_node_from_key(key)  # type: ignore[union-attr]
            for index, key in self._near.items()
        }
