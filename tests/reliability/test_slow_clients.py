"""Slow clients must not stall the predictor (issue 9, defect 3).

The real ``python -m exporter serve`` (nginx in front of 2 sync gunicorn workers) on loopback;
64 real sockets send their headers or their body one byte every 0.5 s while a fast client
measures /predict. Before nginx, 2 such sockets blocked every client for 35 s.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from exporter.settings import PredictorSettings
from tests.processes import FEEDBACK_AUTH, Process, start_predictor

SLOW_CLIENTS = 64
SLOW_SECONDS = 8.0
TRICKLE_SECONDS = 0.5
PREDICT = {"title": "How do I parse JSON in Python?", "body": "json.loads fails on my file"}


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def p99(self) -> float:
        return statistics.quantiles(self.seconds, n=100)[98] if len(self.seconds) > 1 else 0.0


def measure_predict(url: str, duration: float) -> Latencies:
    """Sequential /predict on a new connection each time (as independent clients), with the
    feedback token: faster than the per-address rate limit, which the token is exempt from."""
    out = Latencies()
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            r = requests.post(f"{url}/predict", json=PREDICT, headers=FEEDBACK_AUTH, timeout=5)
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                out.failures.append(f"{r.status_code} {r.text[:80]}")
            out.seconds.append(elapsed)
        except requests.RequestException as exc:
            out.failures.append(type(exc).__name__)
            out.seconds.append(time.perf_counter() - t0)
    return out


def slow_client(port: int, kind: str, stop: threading.Event, sent: list[int]) -> None:
    """One byte every TRICKLE_SECONDS of the headers ("headers") or of a 4 kB body ("body");
    reconnects when the server drops it, until ``stop``."""
    body = b'{"title": "' + b"x" * 4000 + b'"}'
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Padding: {'p' * 200}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if kind == "body":
                    s.sendall(head)
                    trickle = body
                else:
                    trickle = head + body
                for i in range(len(trickle)):
                    if stop.wait(TRICKLE_SECONDS):
                        return
                    s.sendall(trickle[i : i + 1])
                    sent[0] += 1
        except OSError:
            stop.wait(0.2)


@contextlib.contextmanager
def slow_clients(port: int, n: int) -> Iterator[list[int]]:
    stop = threading.Event()
    sent = [0]
    threads = [
        threading.Thread(
            target=slow_client, args=(port, "headers" if i % 2 else "body", stop, sent), daemon=True
        )
        for i in range(n)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)  # every slow connection is open and has sent something
        yield sent
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def worker_kills(proc: Process) -> list[str]:
    text = proc.log_path.read_text(errors="replace")
    return [
        line
        for line in text.splitlines()
        if "WORKER TIMEOUT" in line or "was sent SIGKILL" in line or "exited with code" in line
    ]


@pytest.fixture
def predictor(models_dir: Path, tmp_path: Path, free_port: Callable[[], int]) -> Iterator[str]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (apt-get install nginx-light; .ci/run installs it)")
    port = free_port()
    # a short worker timeout: a worker held by a slow client would be killed within the test;
    # the default rate limit on (issue 15): nginx's limit_req and the slow clients coexist
    rate = PredictorSettings.model_fields["rate_limit_per_second"].default
    proc = start_predictor(
        models_dir, port, tmp_path, TAGWATCH_PROXY="nginx", TAGWATCH_LOG_LEVEL="INFO",
        TAGWATCH_RATE_LIMIT_PER_SECOND=str(rate),
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
        assert proc.popen.poll() is None, proc.log_tail()
        assert not worker_kills(proc), "\n".join(worker_kills(proc))
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_64_slow_clients_delay_predict_by_at_most_100ms_at_p99(predictor: str) -> None:
    url = predictor
    port = int(url.rsplit(":", 1)[1])
    measure_predict(url, 1.0)  # warm up both workers
    baseline = measure_predict(url, 3.0)
    with slow_clients(port, SLOW_CLIENTS) as sent:
        during = measure_predict(url, SLOW_SECONDS)
        health = requests.get(f"{url}/healthz", timeout=5)
    print(
        f"\n/predict p99 alone {baseline.p99() * 1000:.1f} ms ({len(baseline.seconds)} requests), "
        f"with {SLOW_CLIENTS} slow clients {during.p99() * 1000:.1f} ms "
        f"({len(during.seconds)} requests, {len(during.failures)} failed); "
        f"slow clients sent {sent[0]} bytes"
    )
    assert sent[0] >= SLOW_CLIENTS * 4, "the slow clients did not trickle"
    assert health.status_code == 200
    assert not during.failures, during.failures[:5]
    assert len(during.seconds) >= 50
    assert during.p99() <= baseline.p99() + 0.100
