"""A refused model without processes: its reason label, the fallback candidates, the retry key,
the metrics ModelLoadFailed reads and /readyz's warning. The processes (supervisor, gunicorn,
MLflow, Prometheus) are in tests/lifecycle/test_broken_champion.py and test_swap.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from exporter.app import create_app
from exporter.metrics import SupervisorCollector
from exporter.settings import PredictorSettings
from exporter.supervisor import (
    REFUSAL_KINDS,
    SupervisorStatus,
    cached_candidates,
    model_fingerprint,
    read_status,
    refusal_kind,
    write_status,
)
from tests.processes import metric_value

REFUSED = {
    "version": "v9",
    "reason": "models/v9/model.joblib: cannot load model (pickle data was truncated)",
    "kind": "unloadable",
    "since": 1700000000.0,
}


def test_refusal_kinds_are_a_bounded_label() -> None:
    cases = {
        "models/v9/model.joblib: no such model file": "missing",
        "models/v9/model.joblib: cannot load model (EOFError)": "unloadable",
        "models/v9/model.joblib: not a tagwatch model": "unloadable",
        "models/v9/model.joblib: loads but cannot score a question (ValueError: x)": "cannot_score",
        "loading it took more than 120 s": "timeout",
    }
    for problem, kind in cases.items():
        assert refusal_kind(problem) == kind, problem
        assert kind in REFUSAL_KINDS


def _artefact(models: Path, name: str, mtime: float, gate: str | None = None) -> None:
    folder = models / name
    folder.mkdir(parents=True)
    card: dict[str, object] = {"version": name}
    if gate is not None:
        card["gate"] = {"decision": gate}
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "model.joblib").write_bytes(b"x")
    os.utime(folder / "model.joblib", (mtime, mtime))


def test_fallback_candidates_newest_first_never_a_rejected_challenger(tmp_path: Path) -> None:
    _artefact(tmp_path, "v1", 1000)
    _artefact(tmp_path, "v2", 2000, gate="promoted")
    _artefact(tmp_path, "v3", 3000, gate="rejected")  # a challenger the gate turned down
    _artefact(tmp_path, "v4", 4000)  # the refused one
    (tmp_path / ".fetch-x").mkdir()  # a download in progress
    assert cached_candidates(tmp_path, exclude="v4") == ["v2", "v1"]


def test_fingerprint_changes_when_the_model_file_is_rewritten(tmp_path: Path) -> None:
    assert model_fingerprint(tmp_path, "v1") == "missing"
    _artefact(tmp_path, "v1", 1000)
    before = model_fingerprint(tmp_path, "v1")
    assert model_fingerprint(tmp_path, "v1") == before  # unchanged: not tried again
    repaired = tmp_path / "repaired.joblib"
    repaired.write_bytes(b"a good model")
    shutil.copy(repaired, tmp_path / "v1" / "model.joblib")
    assert model_fingerprint(tmp_path, "v1") != before


def test_refusal_and_champion_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(lambda: read_status(tmp_path)))
    write_status(tmp_path, SupervisorStatus(served="v1", champion_version=2))
    text = generate_latest(registry).decode()
    assert metric_value(text, "tagwatch_model_registry_champion_version") == 2
    assert "tagwatch_model_refused_info{" not in text  # nothing refused: no series
    status = SupervisorStatus(served="v1", champion_version=2, refused=REFUSED)
    status.swaps["refused"] = 1
    write_status(tmp_path, status)
    text = generate_latest(registry).decode()
    labels = 'reason="unloadable",served="v1",version="v9"'
    assert metric_value(text, "tagwatch_model_refused_info", labels) == 1
    assert metric_value(text, "tagwatch_model_swaps_total", 'outcome="refused"') == 1
    write_status(tmp_path, SupervisorStatus(served=None, refused=REFUSED))  # nothing loads
    text = generate_latest(registry).decode()
    labels = 'reason="unloadable",served="none",version="v9"'
    assert metric_value(text, "tagwatch_model_refused_info", labels) == 1


def test_readyz_warns_while_serving_the_last_good_version(models_dir: Path, tmp_path: Path) -> None:
    write_status(tmp_path, SupervisorStatus(served="test", refused=REFUSED))
    settings = PredictorSettings(
        models_dir=models_dir, store_enabled=False, metrics_enabled=False
    ).model_copy(update={"multiproc_dir": tmp_path})  # as python -m exporter serve sets it
    client = create_app(settings).test_client()
    r = client.get("/readyz")
    assert r.status_code == 200, r.get_json()  # serving: ready, with a warning
    body = r.get_json()
    assert body["status"] == "ready" and body["model_version"] == "test"
    assert body["refused_model"] == REFUSED
    assert body["warnings"] == [
        "model v9 refused (models/v9/model.joblib: cannot load model (pickle data was "
        "truncated)): serving test, the last good version (docs/runbook.md#modelloadfailed)"
    ]
    assert client.post("/predict", json={"title": "sort a list"}).status_code == 200
    write_status(tmp_path, SupervisorStatus(served="test"))  # the refusal is over
    assert "warnings" not in client.get("/readyz").get_json()
