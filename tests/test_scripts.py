"""Script batches (`sessionstore._scripts.Batch`) on a real Redis."""

from __future__ import annotations

import secrets

import pytest

from sessionstore import RedisClient
from sessionstore._scripts import Batch, LuaScript


@pytest.mark.standalone
async def test_a_reread_sees_a_script_that_redis_had_to_reload(redis: RedisClient) -> None:
    """A script Redis does not know (NOSCRIPT, as after a restart) runs after the rest
    of its batch; a read queued with `reread` is sent again after it and sees its
    write, a plain read keeps the reply it got before."""
    key = f"t{secrets.token_hex(4)}:value"
    await redis.set(key, "before")
    writer = LuaScript(f"w{secrets.token_hex(4)}", f"-- {key}\nredis.call('SET', KEYS[1], 'after')")
    await redis.script_flush()
    batch = Batch(redis)
    batch.script(writer, [key], [])
    plain = batch.command("GET", key)
    reread = batch.command("GET", key, reread=True)
    replies = await batch.execute()
    assert (replies[plain], replies[reread]) == ("before", "after")
    await redis.delete(key)
