"""A port answered by some other process's ``/healthz``: what a leftover replica of an
earlier run looks like to a readiness check that expects its own child's pid."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def foreign_healthz(port: int, pid: int) -> Iterator[int]:
    """Serve ``/healthz`` (200, ``{"status": "ok", "pid": pid}``; 404 elsewhere) on
    `port` of 127.0.0.1 in a thread until the block ends; yields the port."""

    class Foreign(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "pid": pid}).encode()
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Foreign)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
