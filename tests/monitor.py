"""The commands Redis runs, those inside scripts included (MONITOR), for tests that
claim which keys a script looks up: exact, where a timing or a counter would not be."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import Monitor

from sessionstore import RedisClient
from sessionstore._redis import is_cluster


def _nodes(redis: RedisClient) -> list[tuple[str, int]]:
    if is_cluster(redis):
        return [(node.host, node.port) for node in redis.get_primaries()]  # type: ignore[union-attr]
    kwargs = redis.connection_pool.connection_kwargs  # type: ignore[union-attr]
    return [(kwargs["host"], kwargs["port"])]


@asynccontextmanager
async def commands_run(redis: RedisClient) -> AsyncIterator[list[list[str]]]:
    """The commands every primary behind `redis` runs while the block runs, each as its
    words (command name upper-cased), scripts' own commands included; the list is
    filled when the block ends. A marker sent to each node after the block tells where
    the block's commands end, so nothing waits on a timer."""
    if is_cluster(redis):
        await redis.initialize()  # type: ignore[union-attr]
    seen: list[list[str]] = []
    marker = "monitor-end-" + secrets.token_hex(8)
    async with AsyncExitStack() as stack:
        watched: list[tuple[Redis, Monitor]] = []
        for host, port in _nodes(redis):
            client = Redis(host=host, port=port, decode_responses=True)
            stack.push_async_callback(client.aclose)
            watched.append((client, await stack.enter_async_context(client.monitor())))
        yield seen
        for client, monitor in watched:
            await client.echo(marker)
            async for info in monitor.listen():
                words = info["command"].split(" ")
                words[0] = words[0].upper()
                if words == ["ECHO", marker]:
                    break
                seen.append(words)


#: Calls that pass keys to a script: passing one is not looking it up.
_SCRIPT_CALLS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


def naming(seen: list[list[str]], *keys: str) -> list[list[str]]:
    """The commands in `seen` other than script calls that name any of `keys`."""
    wanted = set(keys)
    return [w for w in seen if w[0] not in _SCRIPT_CALLS and wanted & set(w[1:])]


def deletes(seen: list[list[str]], key: str) -> list[list[str]]:
    """The key lists of the DELs in `seen` that drop `key`."""
    return [words[1:] for words in seen if words[0] == "DEL" and key in words[1:]]
