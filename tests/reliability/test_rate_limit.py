"""Acceptance "Limits" (issue 15): per-client rate limits on /predict and /feedback.

The real ``python -m exporter serve`` (nginx in front of 2 gunicorn workers, the defaults of
TAGWATCH_RATE_LIMIT_PER_SECOND and _BURST). One client address (127.0.0.1) floods /predict
and /feedback without the feedback token: beyond its rate nginx answers 429 with Retry-After,
and the flood never reaches the workers. Other clients, on other loopback addresses
(127.0.0.2-127.0.0.41, each well under the limit), measure /predict with and without the
flood in interleaved rounds: their p99 stays within 2x its unloaded value. A client with the
feedback token, on the flooding address itself, is not limited.

Before: 3,000 feedback requests from one client in 8.4 s, all 200.
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.settings import PredictorSettings
from tests.processes import FEEDBACK_AUTH, start_predictor

RATE = PredictorSettings.model_fields["rate_limit_per_second"].default
BURST = PredictorSettings.model_fields["rate_limit_burst"].default
FLOOD_RATE = 10 * RATE  # requests a second from the one flooding address
ROUNDS = 4
PHASE_SECONDS = 5.0
OTHER_CLIENTS = [f"127.0.0.{i}" for i in range(2, 42)]
OTHER_RATE = 80.0  # requests a second over all other clients: 2 each, far under the limit
QUESTION = json.dumps({"title": "How do I sort a list of dictionaries by a value in Python?"})

# the flood, in a process of its own (its CPU and GIL are not the measuring client's):
# argv port seconds rate(0: as fast as possible) threads max_requests; prints its counts
FLOOD = r"""
import http.client, json, sys, threading, time
port, seconds, rate, threads, limit = (int(sys.argv[1]), float(sys.argv[2]),
    float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
bodies = [("/predict", json.dumps({"title": "flood: python list of dicts"})),
          ("/feedback", json.dumps({"prediction_id": "0" * 48, "tags": ["python"]}))]
counts, retry_after, lock = {}, set(), threading.Lock()
sent = [0]
deadline = time.monotonic() + seconds
def run(n):
    conn, i = None, n
    interval = threads / rate if rate else 0.0
    due = time.monotonic() + n * interval / threads
    while time.monotonic() < deadline:
        with lock:
            if sent[0] >= limit:
                return
            sent[0] += 1
        path, body = bodies[i % 2]
        i += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            with lock:
                counts[r.status] = counts.get(r.status, 0) + 1
                if r.status == 429:
                    retry_after.add(r.getheader("Retry-After"))
            if (r.getheader("Connection") or "").lower() == "close":
                conn.close()
                conn = None
        except OSError as exc:
            with lock:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
            conn = None
        if interval:
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))
workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
t0 = time.monotonic()
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({"counts": counts, "retry_after": sorted(map(str, retry_after)),
                  "seconds": time.monotonic() - t0}))
"""


@dataclass
class Flood:
    counts: Counter[str]
    retry_after: list[str]
    seconds: float


@dataclass
class Running:
    popen: subprocess.Popen[str]

    def result(self) -> Flood:
        out, err = self.popen.communicate(timeout=120)
        assert self.popen.returncode == 0, err
        data = json.loads(out)
        counts = Counter({str(k): v for k, v in data["counts"].items()})
        return Flood(counts, data["retry_after"], data["seconds"])


def flood(port: int, seconds: float, rate: float, threads: int = 4, limit: int = 10**9) -> Running:
    argv = [sys.executable, "-c", FLOOD, str(port), str(seconds), str(rate), str(threads)]
    return Running(subprocess.Popen([*argv, str(limit)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))  # fmt: skip


class Clients:
    """Well-behaved clients, one keep-alive connection per loopback address, taking turns."""

    def __init__(self, port: int, addresses: list[str]) -> None:
        self.port = port
        self.addresses = addresses
        self.conns: dict[str, http.client.HTTPConnection] = {}
        self.n = 0

    def predict(self, headers: dict[str, str] | None = None) -> tuple[float, int]:
        source = self.addresses[self.n % len(self.addresses)]
        self.n += 1
        t0 = time.perf_counter()
        for attempt in range(2):  # a keep-alive connection the server closed: once more
            conn = self.conns.get(source)
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=10, source_address=(source, 0)
                )
                self.conns[source] = conn
            try:
                conn.request("POST", "/predict", QUESTION,
                             {"Content-Type": "application/json", **(headers or {})})  # fmt: skip
                r = conn.getresponse()
                r.read()
                return time.perf_counter() - t0, r.status
            except (OSError, http.client.HTTPException):
                conn.close()
                del self.conns[source]
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def measure(self, seconds: float, rate: float) -> tuple[list[float], Counter[int]]:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        due = time.monotonic()
        end = due + seconds
        while time.monotonic() < end:
            dt, status = self.predict()
            latencies.append(dt)
            statuses[status] += 1
            due += 1 / rate
            time.sleep(max(0.0, due - time.monotonic()))
        return latencies, statuses

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.fixture
def port(models_dir: Path, tmp_path: Path, free_port: Callable[[], int]) -> Iterator[int]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (apt-get install nginx-light; .ci/run installs it)")
    port = free_port()
    proc = start_predictor(
        models_dir, port, tmp_path, TAGWATCH_PROXY="nginx", TAGWATCH_FEEDBACK_AUTH="token",
        TAGWATCH_RATE_LIMIT_PER_SECOND=str(RATE), TAGWATCH_RATE_LIMIT_BURST=str(BURST),
    )  # fmt: skip
    try:
        yield port
        assert proc.popen.poll() is None, proc.log_tail()
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_flood_gets_429_and_other_clients_keep_their_p99(port: int) -> None:
    # 1. the probe of the issue: 3,000 requests from one address as fast as it can
    burst = flood(port, seconds=60, rate=0, threads=4, limit=3000).result()
    print(
        f"\n[limits] 3000 requests from one address without the token in {burst.seconds:.1f} s: "
        f"{dict(burst.counts)}, Retry-After {burst.retry_after} "
        f"(limit {RATE:g}/s, burst {BURST})"
    )
    assert sum(burst.counts.values()) == 3000
    passed = burst.counts["401"] + burst.counts["200"] + burst.counts["404"]
    assert burst.counts["429"] >= 3000 - (BURST + RATE * burst.seconds + 5)
    assert passed <= BURST + RATE * burst.seconds + 5, "only the rate reached the workers"
    assert burst.retry_after == ["1"]

    # 2. other clients' /predict, unloaded and under a flood, in interleaved rounds
    clients = Clients(port, OTHER_CLIENTS)
    clients.measure(1.0, OTHER_RATE)  # warm up: connections, both workers
    quiet: list[float] = []
    loaded: list[float] = []
    statuses: Counter[int] = Counter()
    floods: Counter[str] = Counter()
    token_statuses: Counter[int] = Counter()
    for _ in range(ROUNDS):
        lat, st = clients.measure(PHASE_SECONDS, OTHER_RATE)
        quiet += lat
        statuses += st
        running = flood(port, seconds=PHASE_SECONDS + 1.0, rate=FLOOD_RATE)
        time.sleep(0.5)  # the flood is on
        lat, st = clients.measure(PHASE_SECONDS, OTHER_RATE)
        loaded += lat
        statuses += st
        # the token-bearing client, on the flooding address: never limited
        holder = Clients(port, ["127.0.0.1"])
        for _ in range(int(2 * BURST)):
            token_statuses[holder.predict(FEEDBACK_AUTH)[1]] += 1
        holder.close()
        floods += running.result().counts
    clients.close()
    ratio = p99(loaded) / p99(quiet)
    print(
        f"[limits] other clients' /predict p99: unloaded {p99(quiet) * 1000:.1f} ms "
        f"({len(quiet)} requests), during a {FLOOD_RATE:g}/s flood {p99(loaded) * 1000:.1f} ms "
        f"({len(loaded)} requests): x{ratio:.2f}; their answers {dict(statuses)}; the flood's "
        f"answers {dict(floods)}; the token holder on the flooding address: "
        f"{dict(token_statuses)}"
    )
    assert set(statuses) == {200}, "well-behaved clients are never limited"
    assert floods["429"] > floods["200"] + floods["401"] + floods["404"]
    assert token_statuses == {200: ROUNDS * int(2 * BURST)}
    assert ratio <= 2.0
