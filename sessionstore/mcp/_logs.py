"""Keeps full session ids out of the SDK's logs.

The SDK's transport logs session ids whole ("Terminating session: <id>"); a
sessionstore id is a bearer credential, so records from those loggers are
rewritten to keep only the id's first characters.
"""

from __future__ import annotations

import logging
import re

from .._log_filters import add_filter_once

_ID = re.compile(r"\b([0-9]{1,5}\.[A-Za-z0-9_-]{4})[A-Za-z0-9_-]{20}\b")
#: The SDK loggers that may name a session id.
SDK_LOGGERS = ("mcp.server.streamable_http", "mcp.server.streamable_http_manager")


class RedactSessionIds(logging.Filter):
    """Shortens every sessionstore session id in a record's message to its first characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shortened = _ID.sub(r"\1…", message)
        if shortened != message:
            record.msg, record.args = shortened, None
        return True


def redact_sdk_logs() -> None:
    """Install `RedactSessionIds` on the SDK's transport loggers (once)."""
    for name in SDK_LOGGERS:
        add_filter_once(name, RedactSessionIds)
