"""gunicorn's own error answers (requests it cannot parse) in JSON, like the app's.

gunicorn writes an HTML page for a request it rejects before the app sees it (a control
character in a header, a bad request line when no proxy is in front). Clients of this API
expect ``{"error": ..., "status": ...}`` for every error. An unsupported transfer coding is
the client's fault: a 400, not gunicorn's 501 (a 5xx counts against the predictor's SLO).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util

REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    status = 400 if status_int == 501 else status_int
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason, "status": status})
    data = (
        f"HTTP/1.1 {status} {REASONS.get(status, reason)}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
    )
    util.write_nonblock(sock, data.encode("utf-8"))


def install(_: Any = None) -> None:
    """Called in each worker (gunicorn_conf.post_fork): gunicorn looks write_error up at use."""
    util.write_error = write_json_error
