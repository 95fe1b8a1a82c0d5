"""The drift HTTP server's robustness (issue 9, defect 13): bounded threads, idle timeouts,
JSON errors, no absolute paths in /healthz, no Python version in the Server header."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge

from drift.server import IDLE_TIMEOUT_SECONDS, MAX_THREADS, make_server, serve_in_thread


@pytest.fixture
def drift_url(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[str]:
    registry = CollectorRegistry()
    Gauge("tagwatch_drift_bins_judged", "test", registry=registry).set(0)
    port = free_port()

    def health() -> dict[str, object]:
        error = f"{tmp_path}/store.sqlite3: no such store (the predictor creates it)"
        return {"status": "ok", "last_run": {"ok": False, "error": error}}

    server = make_server("127.0.0.1", port, registry, tmp_path / "reports", health)
    serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_health_has_no_absolute_paths_and_server_header_no_python(
    drift_url: str, tmp_path: Path
) -> None:
    r = requests.get(f"{drift_url}/healthz", timeout=5)
    assert r.status_code == 200
    assert str(tmp_path) not in r.text and "store.sqlite3: no such store" in r.text
    assert r.headers["Server"] == "tagwatch-drift"
    assert "Python" not in requests.get(f"{drift_url}/nope", timeout=5).headers["Server"]


def test_metrics_content_type_has_one_charset(drift_url: str) -> None:
    r = requests.get(f"{drift_url}/metrics", timeout=5)
    assert r.headers["Content-Type"].count("charset") == 1
    assert "tagwatch_drift_bins_judged 0.0" in r.text


def test_errors_are_json(drift_url: str) -> None:
    for resp, status in (
        (requests.get(f"{drift_url}/nope", timeout=5), 404),
        (requests.get(f"{drift_url}/reports/2020-01-01.html", timeout=5), 404),
        (requests.post(f"{drift_url}/metrics", data=b"x", timeout=5), 405),
    ):
        assert resp.status_code == status
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json()["status"] == status
    port = int(drift_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GARBAGE / HTTP/9\r\n\r\n")
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
    assert raw.startswith(b"HTTP/1.0 400") and b'"status": 400' in raw


@pytest.mark.timeout(60)
def test_idle_connections_take_no_thread_and_time_out(drift_url: str) -> None:
    port = int(drift_url.rsplit(":", 1)[1])
    before = threading.active_count()
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=15))
        time.sleep(0.5)
        threads = threading.active_count() - before
        assert threads <= MAX_THREADS, f"{threads} threads for 300 idle connections"
        t0 = time.monotonic()
        r = requests.get(f"{drift_url}/metrics", timeout=5)  # idle clients do not delay it
        assert r.status_code == 200 and time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        assert idle[0].recv(1) == b""  # closed by the server after its idle timeout
        assert time.monotonic() - t0 <= IDLE_TIMEOUT_SECONDS + 1
    finally:
        for s in idle:
            with contextlib.suppress(OSError):
                s.close()
