"""The drift process's HTTP side: metrics, health and the popmon reports (read-only)."""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# latest, a day's (YYYY-MM-DD) or a run's (YYYY-MM-DDTHHMMSSZ) report, as HTML or JSON
REPORT_PATH = re.compile(r"^/reports/(latest|\d{4}-\d{2}-\d{2}(?:T\d{6}Z)?)\.(html|json)$")
REPORT_TYPES = {"html": "text/html; charset=utf-8", "json": "application/json"}
ASSET_PATH = re.compile(r"^/reports/assets/(js|css)/([A-Za-z0-9][A-Za-z0-9._-]*\.(js|css))$")
ASSET_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


RUNBOOK_PATHS = ("/docs/runbook.md", "/runbook")
# the work tree's docs/ (make up), or the copy an image installs under <prefix>/share/tagwatch
RUNBOOK_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "docs" / "runbook.md",
    Path(sys.prefix) / "share" / "tagwatch" / "runbook.md",
)
RUNBOOK_FILE = next((p for p in RUNBOOK_CANDIDATES if p.is_file()), RUNBOOK_CANDIDATES[0])


def render_runbook(source: Path = RUNBOOK_FILE) -> str:
    """docs/runbook.md as HTML, one anchor per heading (``#predictordown``): the alert emails'
    runbook links work in the local stack without a code host."""
    import markdown

    body = markdown.markdown(
        source.read_text(encoding="utf-8"),
        extensions=["toc", "tables", "fenced_code"],
        extension_configs={"toc": {"permalink": False}},
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tagwatch runbook</title>"
        "<style>body{font-family:Arial,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "code,pre{background:#f4f4f4}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px}</style></head><body>"
        f"{body}</body></html>\n"
    )


# absolute paths (store, models, state) in health details: only the file name is shown
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/\"':]+/)+([^\s/\"':]*)")
IDLE_TIMEOUT_SECONDS = 5.0
MAX_THREADS = 8
MAX_QUEUED = 32
MAX_WAITING = 2048


def redact_paths(text: str) -> str:
    return ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(path)", text)


def _json_bytes(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


class BoundedHTTPServer(HTTPServer):
    """A fixed pool of ``MAX_THREADS`` threads. A connection waits in a selector (one thread
    for all of them) until it has sent something, and is closed after
    ``IDLE_TIMEOUT_SECONDS`` of silence; only then does it take a pool thread.
    ``ThreadingHTTPServer`` starts a thread per connection (issue 9: 1,000 idle connections
    made 1,004 threads). Beyond ``MAX_WAITING`` connections, or a full pool, a connection
    gets an immediate JSON 503."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="drift-http")
        self.slots = threading.BoundedSemaphore(MAX_THREADS + MAX_QUEUED)
        self.selector = selectors.DefaultSelector()
        self.waiting: dict[Any, tuple[Any, float]] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.watcher = threading.Thread(target=self._watch, name="drift-http-idle", daemon=True)
        self.watcher.start()

    def _refuse(self, request: Any) -> None:
        body = _json_bytes(503, "too many connections; retry later")
        with contextlib.suppress(OSError):
            request.sendall(
                b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            if len(self.waiting) >= MAX_WAITING:
                self._refuse(request)
                return
            self.waiting[request] = (client_address, time.monotonic() + IDLE_TIMEOUT_SECONDS)
            self.selector.register(request, selectors.EVENT_READ)

    def _watch(self) -> None:
        while not self.closed.is_set():
            with self.lock:
                registered = bool(self.waiting)
            events = self.selector.select(timeout=0.2) if registered else []
            if not registered:
                time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                ready = {key.fileobj for key, _ in events}
                for request in list(self.waiting):
                    address, deadline = self.waiting[request]
                    if request not in ready and deadline > now:
                        continue
                    del self.waiting[request]
                    self.selector.unregister(request)
                    if request not in ready:
                        self.shutdown_request(request)  # idle too long
                    elif not self.slots.acquire(blocking=False):
                        self._refuse(request)
                    else:
                        self.pool.submit(self._work, request, address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away or timed out: nothing to log on stderr

    def server_close(self) -> None:
        self.closed.set()
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            for request in list(self.waiting):
                self.selector.unregister(request)
                self.shutdown_request(request)
            self.waiting.clear()


@dataclass(frozen=True)
class _Routes:
    """What one drift server serves; the handler class of that server carries it."""

    registry: CollectorRegistry
    reports_dir: Path
    health: Callable[[], dict[str, Any]]


class _DriftHandler(BaseHTTPRequestHandler):
    """Only fixed routes, report and asset names matched by pattern; every error is JSON."""

    server_version = "tagwatch-drift"
    sys_version = ""  # no Python version in the Server header
    timeout = IDLE_TIMEOUT_SECONDS  # an idle or trickling connection is dropped
    routes: _Routes

    def version_string(self) -> str:
        return self.server_version

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # malformed requests, unsupported methods: JSON, and a 4xx (not 501) for a method
        code = {501: 405, 505: 400}.get(code, code)
        self.request_version = "HTTP/1.0"  # a status line even for a garbled request
        self.close_connection = True
        self._send(
            code,
            _json_bytes(code, message or self.responses.get(code, ("error",))[0]),
            "application/json",
        )

    def _not_found(self, message: str) -> None:
        self._send(404, _json_bytes(404, message), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, file: Path, content_type: str, missing: str) -> None:
        """A report or asset file, or a JSON 404 naming what is missing."""
        if file.is_file():
            self._send(200, file.read_bytes(), content_type)
        else:
            self._not_found(missing)

    def _send_runbook(self) -> None:
        """The runbook as HTML where it is installed (the alert emails link to it)."""
        if RUNBOOK_FILE.is_file():
            self._send(200, render_runbook().encode(), "text/html; charset=utf-8")
        else:
            self._not_found("docs/runbook.md is not installed here")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = self.routes
        if path == "/metrics":
            self._send(200, generate_latest(routes.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, redact_paths(json.dumps(routes.health())).encode(), "application/json")
        elif (m := REPORT_PATH.match(path)) is not None:
            report = Path(routes.reports_dir) / f"{m.group(1)}.{m.group(2)}"
            self._send_file(report, REPORT_TYPES[m.group(2)], "no such report")
        elif path in RUNBOOK_PATHS:
            self._send_runbook()
        elif (m := ASSET_PATH.match(path)) is not None:
            asset = Path(routes.reports_dir) / "assets" / m.group(1) / m.group(2)
            self._send_file(asset, ASSET_TYPES[m.group(3)], "no such asset")
        else:
            self._not_found("not found")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every 15 s would flood the log


def make_server(
    host: str,
    port: int,
    registry: CollectorRegistry,
    reports_dir: Path,
    health: Callable[[], dict[str, Any]],
) -> BoundedHTTPServer:
    """A small server with bounded threads and idle timeouts; only fixed routes, report names
    are matched by pattern; every error is JSON."""

    class Handler(_DriftHandler):
        routes = _Routes(registry, reports_dir, health)

    return BoundedHTTPServer((host, port), Handler)


def serve_in_thread(server: HTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="drift-http", daemon=True)
    thread.start()
    return thread
