"""IMAP connector on aioimaplib, and the managed email client on the pool.

aioimaplib is GPL-3.0: it is an optional extra (``pip install
'sessionstore[imap]'``) and this is the only module that imports it.

aioimaplib does not raise when a connection drops: pending commands wait
for their timeout, ``fetch`` after a drop during IDLE can hang, and an
untagged ``BYE`` is only logged when no command is waiting. So here:

- every command runs under ``call_timeout`` *and* races the connection's
  death: `conn_lost_cb` and BYE pushes (caught by a small protocol subclass)
  end the wait at once with `ConnectionDropped` / `ServerBye`;
- a timed-out connection is marked dead (late answers would be matched to the
  wrong commands);
- NO/BAD answers, which aioimaplib returns as results, become `ReplyError`
  for the classifier;
- the LOGIN line is scrubbed from aioimaplib's debug log (its own scrub misses
  passwords that need quoting).
"""

from __future__ import annotations

import asyncio
import email.header
import email.parser
import email.policy
import email.utils
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aioimaplib import aioimaplib as _imap
from pydantic import SecretStr

from .._log_filters import add_filter_once
from ..exceptions import InvalidInput
from ._faults import ConnectionDropped, ReplyError, ServerBye
from ._imap_client import EmailMetadata, ImapClient
from ._spec import UpstreamSpec

logger = logging.getLogger("sessionstore.upstream.imap")

T = TypeVar("T")

_LIVE_STATES = frozenset({_imap.NONAUTH, _imap.AUTH, _imap.SELECTED})
_MESSAGES = re.compile(rb"MESSAGES (\d+)")
_LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<sep>"[^"]*"|NIL) (?P<name>.+)$')
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_METADATA_ITEMS = "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT FROM TO DATE)])"
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


class _ScrubLogin(logging.Filter):
    """Drops the arguments of LOGIN lines from aioimaplib's debug log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOGIN" in message and message.startswith("Sending"):
            record.msg, record.args = message.split("LOGIN", 1)[0] + "LOGIN <redacted>", ()
        return True


add_filter_once(_imap.__name__, _ScrubLogin)


class _WatchedProtocol(_imap.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, reporting BYE pushes and a BYE greeting."""

    def __init__(self, loop: Any, conn_lost_cb: Any, on_bye: Callable[[str], None]) -> None:
        super().__init__(loop, conn_lost_cb)
        self._on_bye = on_bye

    def _untagged_response(self, line: bytes) -> Any:
        if line.startswith(b"* BYE"):
            self._on_bye(line[5:].strip().decode("utf-8", "replace"))
        return super()._untagged_response(line)

    async def welcome(self, command: bytes) -> None:
        if command.startswith(b"* BYE"):  # e.g. "too many connections" at the greeting
            self._on_bye(command[5:].strip().decode("utf-8", "replace"))
            return
        await super().welcome(command)


class _WatchedIMAP4(_imap.IMAP4):  # type: ignore[misc]
    """aioimaplib's client with `_WatchedProtocol` (IMAP4_SSL drops conn_lost_cb)."""

    def __init__(self, *, on_bye: Callable[[str], None], **kwargs: Any) -> None:
        self._on_bye = on_bye  # read by create_client, which __init__ calls
        super().__init__(**kwargs)

    def create_client(
        self, host: str, port: int, loop: Any, conn_lost_cb: Any = None, ssl_context: Any = None
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = _WatchedProtocol(local_loop, conn_lost_cb, self._on_bye)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


class ImapConnection:
    """One IMAP session; every command is bounded and aware of a dropped link.

    .. versionadded:: 0.1
    """

    def __init__(self, spec: UpstreamSpec, *, call_timeout: float) -> None:
        self.spec = spec
        self.call_timeout = call_timeout
        self.client: Any = None
        self._dead = asyncio.Event()
        self._fault: ConnectionDropped | None = None
        self._closing = False

    # -- liveness --------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False after a loss, a BYE, a timed-out command or `close`."""
        return not self._dead.is_set() and not self._closing

    async def wait_dropped(self) -> None:
        """Return once the connection is known gone (lost, BYE, abandoned)."""
        await self._dead.wait()

    def _lost(self, exc: Exception | None) -> None:
        if self._fault is None:
            reason = f": {type(exc).__name__}" if exc else ""
            self._fault = ConnectionDropped(f"IMAP connection lost{reason}")
        self._dead.set()

    def _bye(self, text: str) -> None:
        if not self._closing and self._fault is None:
            self._fault = ServerBye(text)
        self._dead.set()

    def _raise_if_dead(self) -> None:
        if self._dead.is_set():
            raise self._fault or ConnectionDropped("IMAP connection is no longer usable")

    # -- commands ----------------------------------------------------------------

    async def _bounded(self, what: str, start: Callable[[], Awaitable[T]]) -> T:
        """Await ``start()`` until it ends, the connection dies, or the timeout passes."""
        self._raise_if_dead()
        task = asyncio.ensure_future(start())
        task.add_done_callback(_consume)
        death = asyncio.ensure_future(self._dead.wait())
        try:
            done, _ = await asyncio.wait(
                {task, death}, timeout=self.call_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled from outside (a caller's own timeout)
            self._abandon(f"IMAP {what} cancelled")
            raise
        finally:
            death.cancel()
        if task not in done:
            timed_out = not self._dead.is_set()
            self._abandon(f"IMAP {what} timed out; connection out of step")
            await asyncio.wait({task}, timeout=1.0)
            if timed_out:
                raise TimeoutError(f"IMAP {what} got no answer within {self.call_timeout:g}s")
            self._raise_if_dead()
        return self._outcome(what, task)

    def _outcome(self, what: str, task: asyncio.Future[T]) -> T:
        try:
            return task.result()
        except (TimeoutError, _imap.CommandTimeout):
            # str(CommandTimeout) shows the command with its arguments (a LOGIN password).
            self._abandon(f"IMAP {what} timed out; connection out of step")
            raise TimeoutError(f"IMAP {what} got no answer within {self.call_timeout:g}s") from None
        except _imap.Abort as exc:
            self._raise_if_dead()
            if self.client.protocol.state not in _LIVE_STATES:
                self._abandon(f"IMAP session is {self.client.protocol.state}")
                raise ConnectionDropped(f"IMAP session is {self.client.protocol.state}") from None
            raise ReplyError(what, "BAD", str(exc)) from None

    def _abandon(self, why: str) -> None:
        """Give the connection up: cut the socket and cancel aioimaplib's own tasks.

        A command that never gets its answer can leave aioimaplib holding its
        state lock forever (its greeting task waits for CAPABILITY inside it);
        cancelling those tasks releases it, so nothing stays pending.
        """
        if self._fault is None:
            self._fault = ConnectionDropped(why)
        self._dead.set()
        client = self.client
        if client is None:
            return
        transport = client.protocol.transport
        if transport is not None:
            # abort, not close: a TLS close waits for the peer's close_notify (up to
            # 30 s), which a dead peer never sends, and would leave the socket open.
            transport.abort()
        for task in (*client.tasks, *client.protocol.tasks):
            task.cancel()

    async def command(self, name: str, *args: Any) -> Any:
        """Run aioimaplib's ``client.<name>(*args)``; an error answer raises `ReplyError`.

        Returns:
            aioimaplib's ``Response`` (``result``, ``lines``) of an OK answer.
        """
        method = getattr(self.client, name)
        response = await self._bounded(name.upper(), lambda: method(*args))
        fault = reply_fault(name.upper(), response)
        if fault is not None:
            raise fault
        return response

    async def wait_hello(self) -> None:
        """Wait for the server's greeting (bounded like a command)."""
        await self._bounded("greeting", self.client.wait_hello_from_server)

    async def login(self, username: str, secret: SecretStr) -> None:
        """LOGIN; a refusal raises `ReplyError` (``[AUTHENTICATIONFAILED]``...)."""
        await self.command("login", username, secret.get_secret_value())

    async def noop(self) -> None:
        """NOOP: the cheapest round trip."""
        await self.command("noop")

    async def get_email_count(self, mailbox: str = "INBOX") -> int:
        """Messages in `mailbox` (STATUS MESSAGES; no mailbox selection needed)."""
        response = await self.command("status", quote_mailbox(mailbox), "(MESSAGES)")
        for line in response.lines:
            match = _MESSAGES.search(bytes(line))
            if match:
                return int(match.group(1))
        raise ReplyError("STATUS", "BAD", "no MESSAGES count in the answer")

    async def list_mailboxes(self) -> list[str]:
        """Every mailbox name (LIST "" "*")."""
        response = await self.command("list", '""', '"*"')
        names = []
        for line in response.lines[:-1]:
            match = _LIST_LINE.match(bytes(line))
            if match:
                names.append(match.group("name").decode("utf-8", "replace").strip('"'))
        return names

    async def search(self, *criteria: str, mailbox: str = "INBOX") -> list[str]:
        """Message sequence numbers in `mailbox` matching `criteria` (default ALL)."""
        await self.command("select", quote_mailbox(mailbox))
        response = await self.command("search", *(criteria or ("ALL",)))
        found: list[str] = []
        for line in response.lines[:-1]:  # aioimaplib strips the "SEARCH" word
            words = bytes(line).decode("ascii", "replace").split()
            found.extend(w for w in words if w.isdigit())
        return found

    async def uids(self, mailbox: str = "INBOX") -> list[int]:
        """Every message UID in `mailbox`, ascending (SELECT, UID SEARCH ALL)."""
        await self.command("select", quote_mailbox(mailbox))
        response = await self.command("uid_search", "ALL")
        found: set[int] = set()
        for line in response.lines[:-1]:
            found.update(int(w) for w in bytes(line).split() if w.isdigit())
        return sorted(found)

    async def fetch_metadata(
        self, uids: Sequence[int], mailbox: str = "INBOX"
    ) -> list[EmailMetadata]:
        """Headers, flags and size of the messages `uids` (in that order; gone ones left out).

        Uses ``BODY.PEEK``, so reading metadata never marks a message seen.
        """
        if not uids:
            return []
        await self.command("select", quote_mailbox(mailbox))
        wanted = ",".join(str(uid) for uid in uids)
        response = await self.command("uid", "fetch", wanted, _METADATA_ITEMS)
        found = {m.uid: m for m in parse_metadata(response.lines)}
        return [found[uid] for uid in uids if uid in found]

    async def close(self, timeout: float) -> None:
        """LOGOUT if the session is live, then close the socket; never raises."""
        self._closing = True
        client = self.client
        if client is None:
            return
        protocol = client.protocol
        if timeout > 0 and not self._dead.is_set() and protocol.state in _LIVE_STATES:
            try:
                await asyncio.wait_for(client.logout(), timeout)
            except Exception as exc:  # closing a sick connection must not fail the caller
                logger.debug("IMAP LOGOUT failed while closing: %s", type(exc).__name__)
        self._abandon("closed")
        pending = [*client.tasks, *protocol.tasks]
        if not client._client_task.done():
            client._client_task.cancel()
            pending.append(client._client_task)
        if pending:
            await asyncio.wait(pending, timeout=1.0)


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the outcome of an abandoned command so asyncio does not log it.
    if not task.cancelled():
        task.exception()


def parse_metadata(lines: Sequence[Any]) -> list[EmailMetadata]:
    """`EmailMetadata` from the lines of a UID FETCH answer (see `fetch_metadata`).

    aioimaplib gives each message as its ``* n FETCH (...{size}`` line followed
    by the header literal as a ``bytearray`` and a closing ``)`` line.
    """
    found: list[EmailMetadata] = []
    head: bytes | None = None
    for line in lines:
        if isinstance(line, bytearray) and head is not None:
            found.append(_one_metadata(head, bytes(line)))
            head = None
        elif isinstance(line, bytes) and b" FETCH (" in line:
            if head is not None:  # a message without a header literal
                found.append(_one_metadata(head, b""))
            head = line
    if head is not None:
        found.append(_one_metadata(head, b""))
    return found


def _one_metadata(head: bytes, header_block: bytes) -> EmailMetadata:
    uid = _FETCH_UID.search(head)
    flags = _FETCH_FLAGS.search(head)
    size = _FETCH_SIZE.search(head)
    headers = _HEADERS.parsebytes(header_block)
    date_text = headers.get("Date")
    try:
        date = email.utils.parsedate_to_datetime(date_text) if date_text else None
    except (TypeError, ValueError):
        date = None
    return EmailMetadata.model_validate(
        {
            "uid": int(uid.group(1)) if uid else 0,
            "subject": _decoded(headers.get("Subject")),
            "from": _decoded(headers.get("From")),
            "to": [a for _, a in email.utils.getaddresses(headers.get_all("To") or []) if a],
            "date": date,
            "flags": tuple(flags.group(1).decode("ascii", "replace").split()) if flags else (),
            "size": int(size.group(1)) if size else 0,
        }
    )


def _decoded(value: str | None) -> str:
    """A header value with RFC 2047 encoded words decoded."""
    if not value:
        return ""
    return str(email.header.make_header(email.header.decode_header(value)))


def reply_fault(command: str, response: Any) -> ReplyError | None:
    """A `ReplyError` for a non-OK aioimaplib ``Response``, else None."""
    result = getattr(response, "result", None)
    if not isinstance(result, str) or result.upper() == "OK":
        return None
    lines = getattr(response, "lines", None) or [b""]
    last = lines[-1]
    text = last.decode("utf-8", "replace") if isinstance(last, bytes | bytearray) else str(last)
    return ReplyError(command, result.upper(), text.strip())


def quote_mailbox(name: str) -> str:
    """`name` as an IMAP astring: quoted when it holds spaces or specials."""
    if name and re.fullmatch(r"[A-Za-z0-9_./-]+", name):
        return name
    return str(_imap.quoted(name))


class ImapConnector:
    """Opens IMAP connections for the pool (`Connector` for kind ``imap``).

    Args:
        call_timeout: every command's bound, in seconds.
        connect_timeout: connect, greeting and LOGIN together, in seconds.
        ssl_context: for ``tls`` specs; the system's default trust store by default.

    .. versionadded:: 0.1
    """

    kind = "imap"

    def __init__(
        self,
        *,
        call_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self._ssl_context = ssl_context

    @classmethod
    def from_settings(cls, settings: Any) -> ImapConnector:
        """A connector with the timeouts of an `UpstreamSettings`."""
        return cls(
            call_timeout=settings.call_timeout.total_seconds(),
            connect_timeout=settings.connect_timeout.total_seconds(),
        )

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        return self._ssl_context

    async def connect(self, spec: UpstreamSpec, secret: SecretStr | None) -> ImapConnection:
        """Connect, wait for the greeting and LOGIN, all within ``connect_timeout``.

        Raises:
            TimeoutError, OSError, ssl.SSLError: the network said no.
            ServerBye / ConnectionDropped: the server hung up.
            ReplyError: LOGIN refused (``[AUTHENTICATIONFAILED]``...).
        """
        if spec.host is None or spec.port is None or spec.username is None or secret is None:
            raise InvalidInput(f"upstream {spec.name!r} is not an IMAP account with a password")
        conn = ImapConnection(spec, call_timeout=self.call_timeout)
        deadline = asyncio.timeout(self.connect_timeout)
        try:
            async with deadline:
                conn.client = _WatchedIMAP4(
                    host=spec.host,
                    port=spec.port,
                    timeout=self.call_timeout,
                    conn_lost_cb=conn._lost,
                    on_bye=conn._bye,
                    ssl_context=self._tls() if spec.tls else None,
                )
                await conn.wait_hello()
                await conn.login(spec.username, secret)
        except BaseException as exc:
            await conn.close(0.0)
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise TimeoutError(
                    f"IMAP connect to {spec.address} took over {self.connect_timeout:g}s"
                ) from None
            raise
        return conn

    async def probe(self, connection: ImapConnection) -> None:
        """NOOP under the call timeout."""
        await connection.noop()

    async def close(self, connection: ImapConnection) -> None:
        """LOGOUT (bounded) and close the socket; never raises."""
        await connection.close(min(self.call_timeout, 2.0))

    def result_fault(self, value: object) -> Exception | None:
        """A `ReplyError` when an operation returned a NO/BAD ``Response``."""
        return reply_fault("command", value)

    def redact(self, text: str, secret: SecretStr | None) -> str:
        """`text` with the password, bare or IMAP-quoted, masked."""
        if secret is None or not secret.get_secret_value():
            return text
        raw = secret.get_secret_value()
        for form in (str(_imap.quoted(raw)), raw):
            text = text.replace(form, "***")
        return text


__all__ = [
    "EmailMetadata",
    "ImapClient",
    "ImapConnection",
    "ImapConnector",
    "parse_metadata",
    "quote_mailbox",
    "reply_fault",
]
