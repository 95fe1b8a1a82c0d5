"""nginx in front of gunicorn: slow clients are absorbed by an event loop, never by a worker.

gunicorn's sync workers read a request with a blocking socket: a client that sends its headers
or its body one byte at a time holds a whole worker (issue 9: 2 such clients stopped the
predictor for 35 s). nginx reads and buffers the complete request (headers and body, chunked
bodies decoded and checked) with thousands of connections per process and timeouts, then hands
it to gunicorn over a unix socket in microseconds. The workers, their store and their metrics
stay exactly as they are (see docs/runbook.md "Slow clients" for the measured comparison with
a threaded worker class).

``python -m exporter serve`` starts nginx (if ``TAGWATCH_PROXY`` is ``auto`` and nginx is
installed, or ``nginx``) before it becomes the gunicorn master; nginx gets SIGTERM when that
master exits (``PR_SET_PDEATHSIG``), so nothing outlives the predictor.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from exporter.settings import PredictorSettings

log = logging.getLogger("exporter")

# every status nginx can produce itself: each gets a JSON body like the app's errors
NGINX_ERRORS = {
    400: "bad request: malformed request line, headers or chunked body",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    408: "request timed out: the client sent its request too slowly",
    411: "length required",
    413: "request body too large",
    414: "request URI too long",
    416: "range not satisfiable",
    494: "request headers too large",
    500: "internal error",
    501: "not implemented: unsupported transfer encoding or method",
    502: "the predictor is not answering; retry later",
    503: "the predictor is unavailable; retry later",
    504: "the predictor did not answer in time; retry later",
    505: "HTTP version not supported",
}
# on the wire: "request headers too large" is a 400; an unsupported transfer encoding or HTTP
# version is the client's fault too (a 5xx would count against the predictor's error SLO)
WIRE_STATUS = {494: 400, 501: 400, 505: 400}
PR_SET_PDEATHSIG = 1


def nginx_binary(settings: PredictorSettings) -> str | None:
    """The nginx to start, or None when the predictor must be served by gunicorn directly."""
    if settings.proxy == "none":
        return None
    found = shutil.which(settings.nginx_bin)
    if found is None and settings.proxy == "nginx":
        raise FileNotFoundError(
            f"TAGWATCH_PROXY=nginx but {settings.nginx_bin!r} is not installed "
            "(apt-get install nginx-light)"
        )
    return found


def max_request_bytes(settings: PredictorSettings) -> int:
    """The largest body a valid request can have (JSON escapes can grow text up to 6x+)."""
    return 8 * settings.max_body_bytes + 4 * settings.max_title_chars


def render_nginx_conf(
    settings: PredictorSettings, runtime_dir: Path, upstream: Path, as_root: bool
) -> str:
    """The whole nginx.conf: no include of the system's files, every path under runtime_dir."""
    timeout = f"{settings.proxy_client_timeout_seconds:g}s"
    body_max = max_request_bytes(settings)
    pages = []
    for status in NGINX_ERRORS:
        # "=400": answer with that code (494 is already a 400 on the wire)
        recode = f"={WIRE_STATUS[status]} " if status in WIRE_STATUS and status != 494 else ""
        pages.append(f"        error_page {status} {recode}/_errors/{status}.json;")
    error_pages = "\n".join(pages)
    temp = "\n".join(
        f"    {kind}_temp_path {runtime_dir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if as_root else ""
    return f"""# rendered by exporter/proxy.py at each start; do not edit
{user}worker_processes 1;
daemon off;
pid {runtime_dir / "nginx.pid"};
error_log stderr error;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    server_tokens off;
{temp}
    # slow clients: nginx holds them (cheaply) and drops them after these timeouts
    client_header_timeout {timeout};
    client_body_timeout {timeout};
    send_timeout {timeout};
    keepalive_timeout 15s;
    reset_timedout_connection on;
    # a whole valid request fits in memory: nothing is written to disk
    client_max_body_size {body_max};
    client_body_buffer_size {body_max};
    client_header_buffer_size 4k;
    large_client_header_buffers 4 16k;
    proxy_request_buffering on;
    proxy_buffering on;
    proxy_connect_timeout 5s;
    proxy_read_timeout 60s;
    proxy_send_timeout 60s;
    upstream predictor {{
        server unix:{upstream};
    }}
    server {{
        listen {settings.host}:{settings.port} backlog=4096;
        location / {{
            proxy_pass http://predictor;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Connection close;
        }}
        # static files: an error page must work even for a request nginx could not parse
{error_pages}
        location ^~ /_errors/ {{
            internal;
            root {runtime_dir};
            default_type application/json;
            etag off;
            add_header Cache-Control no-store always;
        }}
    }}
}}
"""


def _die_with_parent() -> None:
    """In the nginx child before exec: SIGTERM when the predictor (gunicorn master) exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def prepare_runtime_dir(path: Path) -> Path:
    """An empty folder for the socket, nginx.conf and nginx's temp files."""
    path = path.resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def start_nginx(nginx: str, settings: PredictorSettings, runtime_dir: Path) -> Path:
    """Write nginx.conf, check it, start nginx; return the unix socket gunicorn must bind."""
    upstream = runtime_dir / "gunicorn.sock"
    errors = runtime_dir / "_errors"
    errors.mkdir(exist_ok=True)
    for status, message in NGINX_ERRORS.items():
        body = {"error": message, "status": WIRE_STATUS.get(status, status)}
        (errors / f"{status}.json").write_text(json.dumps(body) + "\n")
    conf = runtime_dir / "nginx.conf"
    conf.write_text(render_nginx_conf(settings, runtime_dir, upstream, os.geteuid() == 0))
    argv = [nginx, "-p", str(runtime_dir), "-e", "stderr", "-c", str(conf)]
    check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected {conf}: {check.stderr.strip()}")
    popen = subprocess.Popen(argv, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    deadline = time.monotonic() + 10
    while True:  # listening, or a clear error (port in use) instead of a silent dead proxy
        if popen.poll() is not None:
            raise RuntimeError(
                f"nginx exited with {popen.returncode} (port {settings.port} in use?)"
            )
        try:
            socket.create_connection((host, settings.port), timeout=1).close()
            return upstream
        except OSError:
            if time.monotonic() > deadline:
                popen.terminate()
                raise RuntimeError(f"nginx is not listening on {host}:{settings.port}") from None
            time.sleep(0.02)
