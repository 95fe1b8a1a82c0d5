"""Plumbing for fault tests: the real predictor under gunicorn, loopback load, store checks."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.processes import Process, metric_value, start_predictor

TITLES = [
    "How do I sort a list of dictionaries by a value in Python?",
    "java spring boot rest controller returns 404",
    "jquery ajax post json to asp.net mvc controller",
    "c# linq group by multiple columns",
    "css flexbox center a div vertically",
    "sql server select the latest row per group",
]


@dataclass
class Load:
    """``threads`` clients posting /predict in a loop on keep-alive connections."""

    url: str
    threads: int = 4
    ok: list[tuple[float, str]] = field(default_factory=list)  # (time, prediction id)
    latencies: list[tuple[float, float, int]] = field(default_factory=list)  # (t, s, status)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, n: int) -> None:
        session = requests.Session()
        i = n
        while not self._stop.is_set():
            i += self.threads
            t0 = time.monotonic()
            try:
                r = session.post(
                    f"{self.url}/predict", json={"title": f"{TITLES[i % len(TITLES)]} {i}"},
                    timeout=10,
                )  # fmt: skip
            except requests.RequestException:  # a killed worker drops its connection
                session.close()
                session = requests.Session()
                continue
            dt = time.monotonic() - t0
            self.latencies.append((t0, dt, r.status_code))
            if r.status_code == 200:
                self.ok.append((t0, r.json()["prediction_id"]))

    def __enter__(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=15)

    def p99(self, start: float, end: float) -> tuple[float, int, int]:
        """p99 latency (s), requests and non-200 answers of the requests sent in [start, end)."""
        window = [(dt, st) for t, dt, st in self.latencies if start <= t < end]
        if not window:
            return 0.0, 0, 0
        durations = sorted(dt for dt, _ in window)
        p99 = durations[min(len(durations) - 1, int(0.99 * len(durations)))]
        return p99, len(window), sum(1 for _, st in window if st != 200)


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds until ``check`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except (requests.RequestException, sqlite3.Error):
            pass
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def metric(url: str, name: str) -> float:
    return metric_value(requests.get(f"{url}/metrics", timeout=5).text, name) or 0.0


def ready(url: str) -> bool:
    return requests.get(f"{url}/readyz", timeout=5).status_code == 200


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _is_gunicorn(pid: int) -> bool:
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def gunicorn_workers(proc: Process) -> set[int]:
    """pids of the gunicorn workers: gunicorn processes whose parent is the gunicorn master
    (which ``python -m exporter serve`` may run as a child, beside nginx)."""
    out: set[int] = set()
    todo = [proc.popen.pid]
    while todo:
        pid = todo.pop()
        for child in _children(pid):
            if _is_gunicorn(child) and _is_gunicorn(pid):
                out.add(child)
            else:
                todo.append(child)
    return out


@dataclass
class Predictor:
    proc: Process
    url: str
    db: Path


@pytest.fixture
def predictor(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> Iterator[Callable[..., Predictor]]:
    """Start the real predictor (2 sync workers) with its store at ``db``; stopped after."""
    started: list[Process] = []

    def start(db: Path | None = None, **env: str) -> Predictor:
        port = free_port()
        db = db or tmp_path / "store.sqlite3"
        proc = start_predictor(models_dir, port, tmp_path, db, **env)
        started.append(proc)
        return Predictor(proc, f"http://127.0.0.1:{port}", db)

    yield start
    for proc in started:
        proc.stop()


def fault_report(name: str, **numbers: object) -> None:
    """One line per fault in the pytest output (-s) and the captured log: the closing table."""
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
