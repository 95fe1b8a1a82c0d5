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
import math
import os
import re
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
    429: "too many requests from this address: retry after the time in Retry-After, or send "
    'the feedback token (README "Rate limits")',
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


# a token nginx can compare literally (make-secrets.sh writes URL-safe base64)
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")


def nginx_rate(per_second: float) -> str:
    """``limit_req_zone``'s rate: whole requests per second, or per minute below that."""
    if per_second >= 1 and float(per_second).is_integer():
        return f"{int(per_second)}r/s"
    return f"{max(1, round(per_second * 60))}r/m"


def retry_after_seconds(per_second: float) -> int:
    """When a refused client may try again: one request's share of the rate, at least 1 s."""
    return max(1, math.ceil(1 / per_second))


def _rate_limit(
    settings: PredictorSettings, runtime_dir: Path, exempt_token: str | None
) -> tuple[str, str, str]:
    """(http-level zone, the limited locations, the 429 page) of nginx.conf; empty when off.

    The key of the limit is the client address; requests with the feedback token have an
    empty key, which nginx does not count (a site backend sends everything from one address).
    """
    if settings.rate_limit_per_second <= 0:
        return "", "", ""
    exempt = ""
    if exempt_token is not None:
        if _PLAIN_TOKEN.fullmatch(exempt_token) is None:
            raise RuntimeError(
                "TAGWATCH_FEEDBACK_TOKEN_FILE: the token must be letters, digits and ._~+/=- "
                "only (nginx compares it to exempt its requests from the rate limit); "
                "bash scripts/make-secrets.sh writes such tokens"
            )
        exempt = f"        'Bearer {exempt_token}' '';\n"
    rate = nginx_rate(settings.rate_limit_per_second)
    # the map's hash holds the whole header ("Bearer " + a 43-character token does not fit
    # nginx's default bucket of 64 bytes): a power of two with room for it
    bucket = 64
    while bucket < len(exempt_token or "") + 7 + 32:
        bucket *= 2
    zone = f"""    # per client address on /predict and /feedback (TAGWATCH_RATE_LIMIT_PER_SECOND)
    map_hash_bucket_size {bucket};
    map $http_authorization $tagwatch_limit_key {{
        default $binary_remote_addr;
{exempt}    }}
    limit_req_zone $tagwatch_limit_key zone=perclient:10m rate={rate};
    limit_req_status 429;
    limit_req_log_level info;
"""
    locations = f"""        location ~ ^/(predict|feedback)$ {{
            limit_req zone=perclient burst={settings.rate_limit_burst} nodelay;
            proxy_pass http://predictor;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Connection close;
        }}
"""
    page = f"""        location = /_errors/429.json {{
            internal;
            root {runtime_dir};
            default_type application/json;
            etag off;
            add_header Cache-Control no-store always;
            add_header Retry-After {retry_after_seconds(settings.rate_limit_per_second)} always;
        }}
"""
    return zone, locations, page


def render_nginx_conf(
    settings: PredictorSettings,
    runtime_dir: Path,
    upstream: Path,
    as_root: bool,
    exempt_token: str | None = None,
) -> str:
    """The whole nginx.conf: no include of the system's files, every path under runtime_dir.
    ``exempt_token``: the feedback token, whose requests the rate limit does not count (the
    file is then private to its owner)."""
    zone, limited, page_429 = _rate_limit(settings, runtime_dir, exempt_token)
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
{zone}    upstream predictor {{
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
{limited}        # static files: an error page must work even for a request nginx could not parse
{error_pages}
        location ^~ /_errors/ {{
            internal;
            root {runtime_dir};
            default_type application/json;
            etag off;
            add_header Cache-Control no-store always;
        }}
{page_429}    }}
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


def start_nginx(
    nginx: str, settings: PredictorSettings, runtime_dir: Path, exempt_token: str | None = None
) -> Path:
    """Write nginx.conf, check it, start nginx; return the unix socket gunicorn must bind."""
    upstream = runtime_dir / "gunicorn.sock"
    errors = runtime_dir / "_errors"
    errors.mkdir(exist_ok=True)
    for status, message in NGINX_ERRORS.items():
        body = {"error": message, "status": WIRE_STATUS.get(status, status)}
        (errors / f"{status}.json").write_text(json.dumps(body) + "\n")
    conf = runtime_dir / "nginx.conf"
    text = render_nginx_conf(settings, runtime_dir, upstream, os.geteuid() == 0, exempt_token)
    # private from its creation: it may hold the feedback token
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
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
