"""What ``serve --access-log`` may write: uvicorn's access lines with secrets cut out.

A session id is a bearer secret, and request paths carry it
(``/sessions/<id>``): the access log shows only its first characters, as
every other log line does. Query strings may carry credentials a client put
there by mistake (``?token=...``): only numeric values are kept. Headers,
cookies and bodies never reach uvicorn's access line.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote

from .._ids import shorten_session_ids

_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: uvicorn's access record: client, method, path with query, HTTP version, status.
_PATH_ARG = 2


def redact_target(target: str) -> str:
    """`target` (a path with its query) with session ids cut to their first
    characters and every non-numeric query value replaced by ``...``."""
    path, _, query = target.partition("?")
    path = shorten_session_ids(path)
    if not query:
        return path
    kept = [
        f"{quote(name, safe='')}={value if _NUMBER.fullmatch(value) else '...'}"
        for name, value in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{path}?{'&'.join(kept)}"


class AccessLogRedactor(logging.Filter):
    """A filter for uvicorn's ``uvicorn.access`` records: rewrites the request target
    with `redact_target` (other records pass untouched).

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's target argument; never drops a record."""
        args = record.args
        if not isinstance(args, tuple) or len(args) <= _PATH_ARG:
            return True
        target = args[_PATH_ARG]
        if isinstance(target, str):
            record.args = (*args[:_PATH_ARG], redact_target(target), *args[_PATH_ARG + 1 :])
        return True
