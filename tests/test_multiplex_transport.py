"""The multiplexed connection's replies as the socket brings them: split across
reads, cut off mid-reply, and over TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis.exceptions as rex
from redis.asyncio import Redis

from sessionstore import RedisSettings, create_client
from sessionstore._multiplex import MultiplexedConnection
from sessionstore._redis import RedisClient, command_sender
from sessionstore.testing import LocalRedis, free_port
from tests.certificates import self_signed
from tests.polling import eventually

pytestmark = pytest.mark.standalone


class _Relay:
    """A TCP relay between clients and Redis whose Redis-to-client side a test
    drives: everything passes until `hold`, then what Redis sends waits in `held`
    until the test passes it on (`release`) or cuts the client's socket (`cut`)."""

    def __init__(self, redis_url: str) -> None:
        target = urlparse(redis_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.holding = False
        self.held = bytearray()
        self._to_client: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        upstream, to_redis = await asyncio.open_connection(*self._target)
        self._to_client = to_client  # the latest connection is the one driven
        for pump in (self._up(client, to_redis), self._down(upstream, to_client)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _up(client: asyncio.StreamReader, to_redis: asyncio.StreamWriter) -> None:
        while data := await client.read(65536):
            to_redis.write(data)
        to_redis.close()

    async def _down(self, upstream: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        while data := await upstream.read(65536):
            if self.holding and to_client is self._to_client:
                self.held += data
            elif not to_client.is_closing():
                to_client.write(data)
        to_client.close()

    def release(self, size: int) -> None:
        """Pass the first `size` held bytes on to the client."""
        assert self._to_client is not None
        self._to_client.write(bytes(self.held[:size]))
        del self.held[:size]

    def cut(self) -> None:
        """Close the client's socket, whatever is held or on its way."""
        assert self._to_client is not None
        self._to_client.transport.abort()
        self.holding = False
        self.held.clear()

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()


@pytest.fixture
async def relay(redis_url: str) -> AsyncIterator[_Relay]:
    relay = _Relay(redis_url)
    yield relay
    await relay.aclose()


@pytest.fixture
async def relayed(relay: _Relay) -> AsyncIterator[RedisClient]:
    """A client whose connections go through `relay`."""
    client = create_client(RedisSettings.from_dsn(await relay.start()))
    yield client
    await client.aclose()


class _Reads:
    """Counts the reads that hand bytes to the multiplexed connection's replies."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = MultiplexedConnection._received

        def counting(owner: MultiplexedConnection, link: object, data: bytes) -> None:
            self.count += 1
            original(owner, link, data)  # type: ignore[arg-type]

        monkeypatch.setattr(MultiplexedConnection, "_received", counting)


def _bulk(text: str) -> int:
    """The size of `text`'s reply as a RESP bulk string."""
    return len(f"${len(text)}\r\n{text}\r\n")


async def test_a_reply_split_across_reads_is_put_together(
    relayed: RedisClient, relay: _Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply whose bytes come in several reads (a large reply, a slow network) is
    answered once it is whole, to its own caller, and the calls behind it get theirs."""
    send = command_sender(relayed)
    assert send is not None
    await send([("PING",)])  # connected, handshake done
    reads = _Reads(monkeypatch)
    relay.holding = True
    big = "x" * 5000
    first = asyncio.create_task(send([("ECHO", big), ("ECHO", "tail")]))
    second = asyncio.create_task(send([("ECHO", "behind")]))
    expected = _bulk(big) + _bulk("tail") + _bulk("behind")

    async def all_held() -> bool:
        return len(relay.held) == expected

    await eventually(all_held, timeout=5.0, interval=0.001)
    for size in (3, 2000, _bulk(big) - 2003 + 4):  # the cuts fall inside replies
        before = reads.count
        relay.release(size)

        async def read(before: int = before) -> bool:
            return reads.count > before

        await eventually(read, timeout=5.0, interval=0.001)
        assert not first.done() and not second.done()
    relay.holding = False
    relay.release(len(relay.held))
    assert await first == [big, "tail"]
    assert await second == ["behind"]
    assert await send([("ECHO", "next")]) == ["next"]


async def test_a_connection_lost_mid_reply_fails_the_waiting_calls(
    relayed: RedisClient, relay: _Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the socket closes while a reply is half read, every call waiting on it
    fails with ``ConnectionError`` (fast, not at the socket timeout), and the next
    call works on a new connection."""
    send = command_sender(relayed)
    assert send is not None
    (before,) = await send([("CLIENT", "ID")])
    reads = _Reads(monkeypatch)
    relay.holding = True
    calls = [asyncio.create_task(send([("ECHO", word)])) for word in ("cut", "off")]

    async def all_held() -> bool:
        return len(relay.held) == _bulk("cut") + _bulk("off")

    await eventually(all_held, timeout=5.0, interval=0.001)
    relay.release(4)  # "$3\r\n" and no more

    async def read() -> bool:
        return reads.count > 0

    await eventually(read, timeout=5.0, interval=0.001)
    relay.cut()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, rex.ConnectionError) for result in results), results
    (after,) = await send([("CLIENT", "ID")])
    assert after != before


async def test_a_write_larger_than_the_socket_buffers_waits_for_the_socket(
    redis: RedisClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command larger than the socket's buffers makes the transport pause writing:
    the writer waits until the socket drains (the pause and resume reach redis-py's
    writer through the replies' protocol) and the command is answered whole."""
    send = command_sender(redis)
    assert send is not None
    await send([("PING",)])
    pauses = 0
    original = asyncio.StreamReaderProtocol.pause_writing

    def counting(protocol: asyncio.StreamReaderProtocol) -> None:
        nonlocal pauses
        pauses += 1
        original(protocol)

    # redis-py's stream protocol is what its writer's drain waits on.
    monkeypatch.setattr(asyncio.StreamReaderProtocol, "pause_writing", counting)
    key, value = f"{key_prefix}:big", "v" * 30_000_000
    assert await send([("SET", key, value), ("STRLEN", key), ("DEL", key)]) == [
        True,
        len(value),
        1,
    ]
    assert pauses >= 1
    assert await send([("ECHO", "next")]) == ["next"]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private Redis that also listens with TLS: its TLS port and its certificate
    (the clients' CA)."""
    directory = tmp_path_factory.mktemp("tls-redis")
    certificate, key = self_signed(directory)
    port = free_port()
    tls = (
        *("--tls-port", str(port), "--tls-cert-file", str(certificate)),
        *("--tls-key-file", str(key), "--tls-ca-cert-file", str(certificate)),
        *("--tls-auth-clients", "no"),
    )
    with LocalRedis(directory=str(directory), extra=tls):
        yield port, certificate


async def test_calls_over_tls_get_their_own_replies(tls_redis: tuple[int, Path]) -> None:
    """Over TLS (the replies taken from the TLS transport), concurrent calls each get
    their own replies, a reply larger than a TLS record comes back whole, and the
    connection is the TLS one."""
    port, certificate = tls_redis
    client: Redis = Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certificate), decode_responses=True
    )
    multiplexed = MultiplexedConnection(client.connection_pool, client.response_callbacks)
    try:
        big = "y" * 100_000  # several TLS records, several reads

        async def one(i: int) -> list[object]:
            return await multiplexed.execute([("ECHO", f"{i}"), ("ECHO", big), ("ECHO", "end")])

        replies = await asyncio.gather(*(one(i) for i in range(20)))
        assert replies == [[f"{i}", big, "end"] for i in range(20)]
        link = multiplexed._link
        assert link is not None and link.transport.get_extra_info("ssl_object") is not None
    finally:
        await multiplexed.aclose()
        await client.aclose()


async def test_calls_over_a_unix_socket_get_their_own_replies(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A client on a Unix socket takes its replies the same way: concurrent calls each
    get their own, and a reply larger than one read comes back whole."""
    directory = tmp_path_factory.mktemp("unix-redis")
    path = directory / "redis.sock"
    with LocalRedis(directory=str(directory), extra=("--unixsocket", str(path))):
        client = create_client(RedisSettings.from_dsn(f"unix://{path}"))
        try:
            send = command_sender(client)
            assert send is not None
            big = "z" * 300_000

            async def one(i: int) -> list[object]:
                return await send([("ECHO", f"{i}"), ("ECHO", big)])

            replies = await asyncio.gather(*(one(i) for i in range(10)))
            assert replies == [[f"{i}", big] for i in range(10)]
            (info,) = await send([("CLIENT", "INFO")])
            assert "flags=U" in info.split()  # Redis sees a Unix socket client
        finally:
            await client.aclose()
