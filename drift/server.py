"""The drift process's HTTP side: metrics, health and the popmon reports (read-only)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

REPORT_PATH = re.compile(r"^/reports/(latest|\d{4}-\d{2}-\d{2})\.html$")
ASSET_PATH = re.compile(r"^/reports/assets/(js|css)/([A-Za-z0-9][A-Za-z0-9._-]*\.(js|css))$")
ASSET_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


def make_server(
    host: str,
    port: int,
    registry: CollectorRegistry,
    reports_dir: Path,
    health: Callable[[], dict[str, Any]],
) -> ThreadingHTTPServer:
    """A small threaded server; only fixed routes, report names are matched by pattern."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "tagwatch-drift"

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, json.dumps(health()).encode(), "application/json")
            elif (m := REPORT_PATH.match(path)) is not None:
                file = Path(reports_dir) / f"{m.group(1)}.html"
                if file.is_file():
                    self._send(200, file.read_bytes(), "text/html; charset=utf-8")
                else:
                    self._send(404, b"no such report\n", "text/plain; charset=utf-8")
            elif (m := ASSET_PATH.match(path)) is not None:
                file = Path(reports_dir) / "assets" / m.group(1) / m.group(2)
                if file.is_file():
                    self._send(200, file.read_bytes(), ASSET_TYPES[m.group(3)])
                else:
                    self._send(404, b"no such asset\n", "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every 15 s would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="drift-http", daemon=True)
    thread.start()
    return thread
