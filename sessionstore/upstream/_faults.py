"""Faults that connectors raise so the classifier can tell what went wrong.

These are the raw signals, not the errors a caller finally sees: the pool
classifies them (`classify`) and then retries, reconnects, or raises
`UpstreamRejected` / `UpstreamUnavailable` with the fault as ``__cause__``.
They carry no secrets: messages are built from the command name and the
server's status text, never from command arguments.
"""

from __future__ import annotations


class ConnectionDropped(ConnectionError):
    """The connection is gone: the transport reported it lost (``conn_lost_cb``).

    .. versionadded:: 0.1
    """


class ServerBye(ConnectionDropped):
    """The server sent an untagged ``BYE`` (idle logout, kick, shutdown).

    The server ended the session politely; that says nothing bad about the
    upstream's health, so it does not count against its breaker.

    .. versionadded:: 0.1
    """

    def __init__(self, text: str) -> None:
        super().__init__(f"server said BYE: {text}" if text else "server said BYE")
        self.text = text


class ReplyError(Exception):
    """A command came back with an error status (IMAP ``NO`` or ``BAD``).

    aioimaplib returns such answers as results, not exceptions; connectors
    turn them into this fault so the classifier can read the status, the
    response code (``[AUTHENTICATIONFAILED]``...) and the text.

    Args:
        command: the command name (``LOGIN``, ``SELECT``...), never its arguments.
        status: ``NO`` or ``BAD`` (or another non-OK status).
        text: the server's text after the status.

    .. versionadded:: 0.1
    """

    def __init__(self, command: str, status: str, text: str) -> None:
        super().__init__(f"{command} answered {status}: {text}".rstrip(": "))
        self.command = command
        self.status = status
        self.text = text
