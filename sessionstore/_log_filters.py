"""Filters on other libraries' loggers, each installed once.

The store rewrites what some libraries log (an IMAP login, an MCP session id)
before any handler sees it. A module or an app may be set up more than once in
a process (tests, several apps), so a filter is added only if the logger does
not carry one of its kind already.
"""

from __future__ import annotations

import logging


def add_filter_once(logger_name: str, kind: type[logging.Filter]) -> None:
    """Add a `kind` filter to the logger `logger_name` unless it has one."""
    target = logging.getLogger(logger_name)
    if not any(isinstance(f, kind) for f in target.filters):
        target.addFilter(kind())
