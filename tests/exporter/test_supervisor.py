"""The supervisor's pieces without processes: status file, metrics, preflight, settings.

The swap itself (gunicorn, MLflow, load) is tested in tests/lifecycle/test_swap.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics import SupervisorCollector
from exporter.settings import PredictorSettings
from exporter.supervisor import (
    SupervisorStatus,
    follows_registry,
    preflight,
    read_pointer,
    read_status,
    report_worker,
    worker_reports,
    write_pointer,
    write_status,
)
from tests.processes import metric_value


def test_status_round_trip_and_metrics(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    assert read_status(None) is None
    status = SupervisorStatus(registry_errors=3, last_sync_timestamp=1700000000.5, served="v2")
    status.swaps["done"] = 2
    status.registry_versions["v2"] = 7
    write_status(tmp_path, status)
    assert read_status(tmp_path) == status
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(lambda: read_status(tmp_path)))
    text = generate_latest(registry).decode()
    assert metric_value(text, "tagwatch_model_registry_errors_total") == 3
    assert metric_value(text, "tagwatch_model_registry_last_sync_timestamp_seconds") == (
        1700000000.5
    )
    assert metric_value(text, "tagwatch_model_swaps_total", 'outcome="done"') == 2
    assert metric_value(text, "tagwatch_model_swaps_total", 'outcome="refused"') == 0
    # a torn or foreign file is no status, never an exception in /metrics
    (tmp_path / "supervisor.json").write_text("{not json")
    assert read_status(tmp_path) is None
    assert "tagwatch_model_registry_errors" not in generate_latest(registry).decode()


def test_pointer_and_worker_reports(tmp_path: Path) -> None:
    assert read_pointer(tmp_path) is None
    write_pointer(tmp_path, "v1")
    assert read_pointer(tmp_path) == "v1"
    import os

    report_worker(tmp_path, os.getpid(), "v1", None)
    report_worker(tmp_path, 2**22 + 12345, "v0", None)  # no such process: pruned
    reports = worker_reports(tmp_path)
    assert list(reports) == [os.getpid()]
    assert reports[os.getpid()]["model_version"] == "v1"
    assert len(list((tmp_path / "workers").glob("*.json"))) == 1


@pytest.mark.parametrize(
    ("env", "follows"),
    [
        ({"follow_registry": True}, True),
        ({"follow_registry": False}, False),
        ({"follow_registry": True, "mlflow_tracking_uri": ""}, False),
        ({"follow_registry": True, "model_version": "20110101T000000Z"}, False),
    ],
)
def test_follows_registry(env: dict[str, object], follows: bool) -> None:
    assert follows_registry(PredictorSettings(**env)) is follows  # type: ignore[arg-type]


def test_preflight_loads_the_model_in_a_separate_process(models_dir: Path, tmp_path: Path) -> None:
    assert preflight(models_dir, "test", timeout=120) is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a pickle")
    (broken / "model_card.json").write_text(json.dumps({"version": "broken"}))
    problem = preflight(tmp_path, "broken", timeout=120)
    assert problem is not None and "cannot load model" in problem
    assert "no such model file" in (preflight(tmp_path, "missing", timeout=120) or "")
