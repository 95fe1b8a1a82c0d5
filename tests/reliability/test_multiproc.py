"""The multiprocess metrics directory stays bounded over 200 worker restarts (defect 11)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from exporter.multiproc import directory_size
from tests.processes import metric_value
from tests.reliability.conftest import Predictor, fault_report, gunicorn_workers

pytestmark = pytest.mark.slow
RESTARTS = 200
MAX_REQUESTS = 2  # gunicorn restarts a worker after this many requests (TAGWATCH_MAX_REQUESTS)


def metrics_seconds(url: str, session: requests.Session) -> float:
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        session.get(f"{url}/metrics", timeout=10)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_200_worker_restarts_keep_metrics_fast_and_counters_intact(
    predictor: Callable[..., Predictor], tmp_path: Path
) -> None:
    # 4 workers boot in parallel (forked from a master that imported the app); the median of
    # 15 /metrics calls, fresh and after the restarts, both with the same restart settings
    p = predictor(TAGWATCH_MAX_REQUESTS=str(MAX_REQUESTS), TAGWATCH_WORKERS="4")
    fresh = metrics_seconds(p.url, requests.Session())
    multiproc = tmp_path / "prometheus-multiproc"
    seen: set[int] = set()
    sent = 0
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:  # concurrent clients: every worker reaches max_requests together
        nonlocal sent
        session = requests.Session()
        while not stop.is_set():
            r = session.post(f"{p.url}/predict", json={"title": "python list"}, timeout=30)
            with lock:
                sent += r.status_code == 200

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while len(seen) < RESTARTS + 4 and time.monotonic() < t0 + 300:
        seen |= gunicorn_workers(p.proc)
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    restarts = len(seen) - 4
    restart_seconds = time.monotonic() - t0
    assert restarts >= RESTARTS, f"only {restarts} restarts in 300 s"
    time.sleep(1.5)
    text = requests.get(f"{p.url}/metrics", timeout=10).text
    counted = metric_value(text, "tagwatch_predictions_total") or 0.0
    files, size = directory_size(multiproc)
    after = metrics_seconds(p.url, requests.Session())
    fault_report(
        f"{restarts} worker restarts",
        metrics_fresh_ms=round(fresh * 1e3, 1),
        metrics_after_ms=round(after * 1e3, 1),
        files=files,
        disk_kib=size // 1024,
        predictions_sent=sent,
        predictions_total=counted,
        restarts_took_s=round(restart_seconds, 1),
    )
    assert counted == sent  # graceful restarts flush their observations: exact
    assert files <= 32, f"{files} files in the multiprocess directory"
    assert after <= 2 * fresh + 0.002, f"/metrics {after * 1e3:.1f} ms vs {fresh * 1e3:.1f} fresh"
