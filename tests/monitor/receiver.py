"""A real HTTP server that records the JSON bodies POSTed to it (an alert webhook receiver)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Listens on ``127.0.0.1:port`` until :meth:`stop`; ``bodies`` holds ``(path, json)`` in arrival order."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[tuple[str, dict]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[dict]:
        return [body for p, body in self.bodies if p == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
