"""The reference server: a FastAPI app over `SessionStore` (``sessionstore serve``).

``uvicorn --factory sessionstore.server:create_app`` also works; settings
then come from ``SESSIONSTORE_*`` environment variables.
"""

from __future__ import annotations

from .._health import HealthSection
from ._app import UNSESSIONED_PATHS, create_app
from ._health import CORE_CHECKS
from ._state import HealthCheck, ServerState

__all__ = [
    "CORE_CHECKS",
    "UNSESSIONED_PATHS",
    "HealthCheck",
    "HealthSection",
    "ServerState",
    "create_app",
]
