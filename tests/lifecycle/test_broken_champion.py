"""A bad version never takes serving down (issue 15, "Broken champion"), on real processes.

``make up``'s stack (scripts/up.sh: MLflow store, predictor, Prometheus with the real rules,
Alertmanager, the mail sink), a champion whose model file is truncated in the registry and in
the local cache, a restart: the stack comes up on the last good version, ModelLoadFailed fires
and is mailed, and a re-promotion of the repaired version is served with no restart. And
``lifecycle promote`` refuses a broken version without moving the alias.
"""

from __future__ import annotations

import json
import shutil
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests

from tagger.settings import TagwatchSettings
from tests.browser.stack import LocalStack, free_ports, load_services, make_stack
from tests.lifecycle.conftest import TwoVersions, cache_artefact, mlflow_settings
from tests.lifecycle.test_swap import run_main, served_versions
from tests.processes import metric_value

pytestmark = pytest.mark.slow
needs_prometheus = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
    reason="prometheus / prometheus-alertmanager not installed",
)


def _registry_copies(artifacts_dir: Path, artefact_version: str) -> list[Path]:
    """The model files of ``artefact_version`` in the MLflow artefact store."""
    found = [
        card.parent / "model.joblib"
        for card in artifacts_dir.rglob("model_card.json")
        if json.loads(card.read_text()).get("version") == artefact_version
        and (card.parent / "model.joblib").is_file()
    ]
    assert found, f"{artefact_version} not in {artifacts_dir}"
    return found


def _truncate(paths: list[Path]) -> dict[Path, bytes]:
    """Truncate each file to a third; returns the good bytes, to repair them."""
    good = {}
    for path in paths:
        good[path] = path.read_bytes()
        path.write_bytes(good[path][: len(good[path]) // 3])
    return good


def _repair(good: dict[Path, bytes]) -> None:
    for path, data in good.items():
        path.write_bytes(data)


def _poll(what: str, check: Any, timeout: float, stack: LocalStack) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except requests.RequestException:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{stack.log_tail()}")


def _firing(stack: LocalStack, alertname: str) -> list[dict[str, Any]]:
    alerts = requests.get(stack.url("prometheus", "/api/v1/alerts"), timeout=5).json()
    return [
        a
        for a in alerts["data"]["alerts"]
        if a["labels"]["alertname"] == alertname and a["state"] == "firing"
    ]


def _mail_about(folder: Path, alertname: str) -> EmailMessage | None:
    for f in sorted(folder.glob("*.eml")):
        msg = message_from_bytes(f.read_bytes(), policy=policy.default)
        if isinstance(msg, EmailMessage) and alertname in str(msg["Subject"]):
            return msg
    return None


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


@needs_prometheus
@pytest.mark.timeout(1200)  # a whole stack, an alert's for: and an email, on a busy 2-core box
def test_broken_champion_falls_back_alerts_and_returns(
    tmp_path: Path, models_dir: Path, small_artefacts: dict[str, Path]
) -> None:
    ports = free_ports([s.name for s in load_services()])
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)  # "test": registered as version 1 by make up
    stack = make_stack(
        tmp_path,
        models,
        ports,
        {
            "TAGWATCH_FOLLOW_REGISTRY": "true",
            "TAGWATCH_MODEL_POLL_SECONDS": "1",
            "STACK_PROMETHEUS_INTERVAL": "1s",
        },
    )
    readyz = stack.url("predictor", "/readyz")
    # the stack's own MLflow store (scripts/stack-env.sh) as a stack that served version 2 left
    # it: versions 1 (test) and 2 (small-k20) promoted in turn, v2 in the local cache and LATEST
    from lifecycle.registry import Registry, sync_champion
    from tagger.tracking import log_training

    settings = mlflow_settings(stack.var / "mlflow")
    settings.mlflow_artifacts_dir.mkdir(parents=True)
    v2_folder = cache_artefact(small_artefacts["small-k20"], tmp_path / "v2", set_latest=False)
    for n, folder in ((1, models / "test"), (2, v2_folder)):
        registered = log_training(settings, folder, run_name=f"v{n}", tags={"kind": "test"})
        assert registered.version == n
        Registry(settings).promote(n, reason=f"test: v{n}", actor="pytest")
    sync_champion(settings, models)
    assert (models / "LATEST").read_text().strip() == "small-k20"
    try:
        # the champion's model file truncated in the registry and in the cache, then a start
        good = _truncate(_registry_copies(settings.mlflow_artifacts_dir, "small-k20"))
        _truncate([models / "small-k20" / "model.joblib"])
        t0 = time.monotonic()
        up = stack.script("up.sh")
        broken_up = time.monotonic() - t0
        assert up.returncode == 0, up.stdout + up.stderr + stack.log_tail()
        assert "warning: predictor: model small-k20 refused" in up.stderr, up.stderr
        ready = requests.get(readyz, timeout=5)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["model_version"] == "test", body  # version 1, the last good one
        assert body["refused_model"]["version"] == "small-k20"
        assert "cannot load model" in body["refused_model"]["reason"]
        answer = requests.post(stack.url("predictor", "/predict"), json={"title": "sort a list"})
        assert answer.status_code == 200 and answer.json()["model_version"] == "test"
        assert (models / "LATEST").read_text().strip() == "small-k20"  # the wanted one
        log = (stack.var / "log" / "stack.log").read_text()
        assert "model small-k20 refused" in log and "the last good version" in log
        fallback = float(log.split("the last good version, after ")[1].split(" s")[0])

        # ModelLoadFailed: real Prometheus, the real rule (for: 1m), then Alertmanager's email
        t_alert = time.monotonic()
        firing = _poll("ModelLoadFailed firing", lambda: _firing(stack, "ModelLoadFailed"),
                       240, stack)  # fmt: skip
        alert_seconds = time.monotonic() - t_alert
        labels = firing[0]["labels"]
        assert (labels["cause"], labels["version"], labels["served"], labels["reason"]) == (
            "refused",
            "small-k20",
            "test",
            "unloadable",
        )
        mail_dir = stack.var / "mail"
        mail = _poll("the email", lambda: _mail_about(mail_dir, "ModelLoadFailed"), 180, stack)
        text = _text(mail)
        assert "Model small-k20 refused (unloadable)" in text and "serves test" in text, text
        assert "/readyz" in text and "lifecycle promote" in text, text

        # promoting it again while it is still broken: exit 3, the alias does not move
        again = stack.exec("python", "-m", "lifecycle", "promote", "--version", "2",
                           "--reason", "test: still broken")  # fmt: skip
        assert again.returncode == 3, again.stdout + again.stderr
        assert "does not load" in again.stderr and "alias did not move" in again.stderr

        # repaired in the registry (the cache stays truncated), promoted again: served, no restart
        _repair(good)
        t_promoted = time.monotonic()
        again = stack.exec("python", "-m", "lifecycle", "promote", "--version", "2",
                           "--reason", "test: repaired")  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        assert "promoted again" in again.stdout, again.stdout
        promote_cli = time.monotonic() - t_promoted
        url = stack.url("predictor")

        def swapped() -> bool:  # every worker on v2, the swap counted (no restart: counters kept)
            done = metric_value(requests.get(f"{url}/metrics", timeout=5).text,
                                "tagwatch_model_swaps_total", 'outcome="done"')  # fmt: skip
            return done == 1 and served_versions(url) == {"small-k20"}

        _poll("the repaired v2 served by every worker", swapped, 120, stack)
        back = time.monotonic() - t_promoted
        ready = requests.get(readyz, timeout=5).json()
        assert ready == {"status": "ready", "model_version": "small-k20"}, ready
        text = requests.get(f"{url}/metrics", timeout=5).text
        assert metric_value(text, "tagwatch_model_swaps_total", 'outcome="done"') == 1  # no restart
        assert metric_value(text, "tagwatch_model_swaps_total", 'outcome="refused"') == 1
        assert metric_value(text, "tagwatch_model_registry_champion_version") == 2
        assert "tagwatch_model_refused_info{" not in text
        print(
            f"broken champion: make up succeeded in {broken_up:.1f} s with the champion "
            f"truncated (fallback found {fallback:.1f} s after the refusal); "
            f"ModelLoadFailed firing {alert_seconds:.0f} s after make up returned (for: 1m); "
            f"repaired v2 served {back:.1f} s after the re-promotion started "
            f"(the CLI's own check {promote_cli:.1f} s of it), no restart"
        )
    finally:
        down = stack.script("down.sh", timeout=90)
        assert down.returncode == 0, down.stdout + down.stderr


def test_promote_refuses_a_broken_version(
    two_versions: TwoVersions,
    registry_settings: TagwatchSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``lifecycle promote`` loads the version and scores a question before the alias moves."""
    from lifecycle.registry import Registry

    registry = Registry(registry_settings)
    runs_before = len(registry.client.search_runs([registry.experiment_id]))
    good = _truncate(
        _registry_copies(registry_settings.mlflow_artifacts_dir, two_versions.artefacts[2])
    )
    try:
        code, out, err = run_main(monkeypatch, capsys, registry_settings, "promote",
                                  "--version", "2", "--reason", "broken")  # fmt: skip
    finally:
        _repair(good)
    assert code == 3, (code, out, err)
    assert "--version: version 2" in err and "cannot load model" in err, err
    assert "alias did not move" in err and "Traceback" not in err
    champion = registry.champion()
    assert champion is not None and champion.version == 1, "the alias must not move"
    assert len(registry.client.search_runs([registry.experiment_id])) == runs_before
    # repaired: the same command promotes it
    code, out, err = run_main(monkeypatch, capsys, registry_settings, "promote",
                              "--version", "2", "--reason", "repaired")  # fmt: skip
    assert code == 0 and "version 1 -> 2" in out, (code, out, err)
