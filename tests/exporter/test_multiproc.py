"""Dead workers' metric files are folded into archives: totals kept, directory bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as pc_values
from prometheus_client.multiprocess import MultiProcessCollector

from exporter.multiproc import directory_size, merge_dead_worker
from tests.processes import metric_value


def _write_as_worker(directory: Path, pid: int, n: int) -> None:
    """Metric files exactly as a worker with ``pid`` writes them (the real mmap classes)."""
    original = pc_values.ValueClass  # restored as it was: later tests run single-process
    pc_values.ValueClass = pc_values.MultiProcessValue(lambda: pid)
    try:
        r = CollectorRegistry()
        c = Counter("t_requests", "r", ["status"], registry=r)
        h = Histogram("t_seconds", "s", buckets=(0.1, 1.0), registry=r)
        g = Gauge("t_queue", "q", multiprocess_mode="livesum", registry=r)
        for _ in range(n):
            c.labels(status="200").inc()
            h.observe(0.05)
        g.set(n)
    finally:
        pc_values.ValueClass = original


def _collect(directory: Path) -> str:
    r = CollectorRegistry()
    MultiProcessCollector(r, path=str(directory))
    return generate_latest(r).decode()


def test_merge_keeps_totals_and_bounds_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for pid in range(1000, 1050):
        _write_as_worker(tmp_path, pid, n=3)
    before = _collect(tmp_path)
    files_before, _ = directory_size(tmp_path)
    for pid in range(1000, 1049):  # all but one worker died
        merge_dead_worker(tmp_path, pid)
    after = _collect(tmp_path)
    files_after, _ = directory_size(tmp_path)
    assert files_before == 150 and files_after == 5  # 2 archives + the live worker's 3
    for name, labels in [
        ("t_requests_total", 'status="200"'),
        ("t_seconds_count", ""),
        ("t_seconds_sum", ""),
        ("t_seconds_bucket", 'le="0.1"'),
    ]:
        assert metric_value(after, name, labels) == pytest.approx(
            metric_value(before, name, labels)
        )
    assert metric_value(after, "t_requests_total", 'status="200"') == 150
    assert metric_value(after, "t_queue") == 3  # only the live worker's gauge is left
    assert os.path.exists(tmp_path / "counter_archive.db")
