"""The predictor follows the registry's champion: promotion under load, rollback, MLflow down.

Real processes: a SQLite-backed MLflow, ``python -m exporter serve`` (supervisor + gunicorn +
nginx when installed), ``python -m lifecycle promote``, and real concurrent clients on loopback.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import TwoVersions, cache_artefact, serving_env
from tests.lifecycle.load import Load
from tests.processes import (
    REPO_ROOT,
    Process,
    http_ok,
    metric_value,
    start_predictor,
    start_process,
    wait_until,
)

pytestmark = pytest.mark.slow
POLL = 1.0
WORKERS = 2


def served_versions(url: str) -> set[str]:
    """The versions in ``tagwatch_model_info`` (one series per live worker's model)."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return set(re.findall(r'^tagwatch_model_info\{[^}]*version="([^"]*)"', text, re.M))


def metrics(url: str) -> str:
    return requests.get(f"{url}/metrics", timeout=5).text


def lifecycle_cli(settings: TagwatchSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "TAGWATCH_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(settings.mlflow_artifacts_dir),
    }
    import os

    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def predictor(
    models_dir: Path, tmp_path: Path, port: int, **env: str
) -> Iterator[tuple[str, Process]]:
    env = {"TAGWATCH_WORKERS": str(WORKERS), **env}
    proc = start_predictor(models_dir, port, tmp_path, tmp_path / "tagwatch.sqlite3", **env)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()


def wait_served(proc: Process, url: str, version: str, timeout: float = 60.0) -> float:
    """Seconds until every worker serves ``version`` (only that version in model_info)."""
    t0 = time.monotonic()
    wait_until(proc, lambda: served_versions(url) == {version}, f"only {version} served", timeout)
    return time.monotonic() - t0


def test_promotion_under_load_zero_failures(
    two_versions: TwoVersions,
    registry_settings: TagwatchSettings,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    v1, v2 = two_versions.artefacts[1], two_versions.artefacts[2]
    models = tmp_path / "models"  # an empty cache: the champion comes from MLflow
    with predictor(models, tmp_path, free_port(), **serving_env(registry_settings, POLL)) as (
        url,
        proc,
    ):
        assert (models / "LATEST").read_text().strip() == v1
        assert served_versions(url) == {v1}
        text = metrics(url)
        assert metric_value(text, "tagwatch_model_registry_version") == 1
        assert metric_value(text, "tagwatch_model_registry_errors_total") == 0
        before = requests.post(f"{url}/predict", json={"title": "python list sort"}).json()
        assert before["model_version"] == v1

        with Load(url, threads=3, max_seconds=120) as load:
            time.sleep(1.5)
            out = lifecycle_cli(registry_settings, "promote", "--version", "2", "--reason", "test")
            assert out.returncode == 0, out.stderr
            t_promoted = time.monotonic()
            swap_seconds = wait_served(proc, url, v2, timeout=60)
            time.sleep(1.0)  # keep the load on after the swap
        failed = load.failed()
        assert not failed, f"{len(failed)} failed during the swap: {failed[:3]}"
        versions = {a.version for a in load.answers}
        assert versions == {v1, v2}, versions
        last_old = load.last_other_version(v2)
        assert last_old is not None and last_old - t_promoted < 30
        # every answer after the swap completed came from the new model
        assert {a.version for a in load.since(t_promoted + swap_seconds + 0.5)} == {v2}
        print(
            f"swap: {swap_seconds:.1f} s after promotion (poll {POLL} s), "
            f"{len(load.answers)} requests, 0 failed, "
            f"max latency {max(a.seconds for a in load.answers):.2f} s"
        )
        assert swap_seconds < POLL + 30

        text = metrics(url)
        assert metric_value(text, "tagwatch_model_registry_version") == 2
        assert metric_value(text, "tagwatch_model_swaps_total", 'outcome="done"') == 1
        assert (metric_value(text, "tagwatch_model_registry_last_sync_timestamp_seconds") or 0) > 0
        after = requests.post(f"{url}/predict", json={"title": "python list sort"}).json()
        assert after["model_version"] == v2
    # stored predictions carry the version that served them (written when the workers exit)
    conn = sqlite3.connect(tmp_path / "tagwatch.sqlite3")
    stored = dict(conn.execute("SELECT id, model_version FROM predictions").fetchall())
    conn.close()
    assert stored[before["prediction_id"]] == v1
    assert stored[after["prediction_id"]] == v2
    answered = {a.version for a in load.answers}
    assert set(stored.values()) == answered


def test_rollback(
    two_versions: TwoVersions,
    registry_settings: TagwatchSettings,
    tmp_path: Path,
    free_port: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lifecycle.registry import Registry

    v1, v2 = two_versions.artefacts[1], two_versions.artefacts[2]
    models = tmp_path / "models"

    def cli(*args: str) -> tuple[int, str, str]:
        return run_main(monkeypatch, capsys, registry_settings, *args)

    with predictor(models, tmp_path, free_port(), **serving_env(registry_settings, POLL)) as (
        url,
        proc,
    ):
        code, _, err = cli("promote", "--version", "2", "--reason", "try v2")
        assert code == 0, err
        wait_served(proc, url, v2)
        code, out, err = cli("promote", "--version", "1", "--reason", "v2 worse", "--actor", "ops")
        assert code == 0, err
        assert "version 2 -> 1" in out and "rollback by ops: v2 worse" in out
        wait_served(proc, url, v1)
        assert requests.post(f"{url}/predict", json={"title": "a"}).json()["model_version"] == v1
        assert metric_value(metrics(url), "tagwatch_model_registry_version") == 1
        assert metric_value(metrics(url), "tagwatch_model_swaps_total", 'outcome="done"') == 2
    champion = Registry(registry_settings).champion()
    assert champion is not None and champion.version == 1
    assert champion.tags["promoted_by"] == "ops"
    assert champion.tags["promoted_reason"] == "v2 worse"
    code, listing, err = cli("versions")
    assert code == 0, err
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "champion" in rows["1"] and "champion" not in rows["2"]
    assert "by ops: v2 worse" in rows["1"]


def test_mlflow_down_at_start_serves_cached_champion(
    small_artefacts: dict[str, Path], tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """An unreachable registry: the cached champion is served, warned about and counted; the
    retries go on; a local pointer change still swaps (no MLflow needed)."""
    models = tmp_path / "models"
    cache_artefact(small_artefacts["small-k20"], models)
    closed = free_port()  # nothing listens there
    down = TagwatchSettings(mlflow_tracking_uri=f"http://127.0.0.1:{closed}")
    with predictor(models, tmp_path, free_port(), **serving_env(down, POLL)) as (url, proc):
        assert served_versions(url) == {"small-k20"}
        r = requests.post(f"{url}/predict", json={"title": "python list sort"})
        assert r.status_code == 200 and r.json()["model_version"] == "small-k20"
        assert "model registry unreachable" in proc.log_path.read_text()
        errors = metric_value(metrics(url), "tagwatch_model_registry_errors_total") or 0
        assert errors >= 1
        wait_until(
            proc,
            lambda: (
                (metric_value(metrics(url), "tagwatch_model_registry_errors_total") or 0) > errors
            ),
            "the supervisor retrying on its poll interval",
            timeout=30,
        )
        assert (
            metric_value(metrics(url), "tagwatch_model_registry_last_sync_timestamp_seconds") == 0
        )
        # without MLflow, rewriting models/LATEST swaps too
        cache_artefact(small_artefacts["small-k30"], models)
        wait_served(proc, url, "small-k30", timeout=60)
        assert requests.post(f"{url}/predict", json={"title": "x"}).json()["model_version"] == (
            "small-k30"
        )


def test_follows_a_real_mlflow_server_and_survives_it_going_down(
    two_versions: TwoVersions,
    registry_settings: TagwatchSettings,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    """Through ``mlflow server`` (REST): a promotion is served; the server stops: the model
    stays served, the failures are counted; it comes back: the next promotion is served."""
    from lifecycle.registry import Registry

    v1, v2 = two_versions.artefacts[1], two_versions.artefacts[2]
    mlflow_port = free_port()
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        registry_settings.mlflow_tracking_uri,
        "--default-artifact-root",
        str(registry_settings.mlflow_artifacts_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(mlflow_port),
        "--workers",
        "1",
    ]
    server_url = f"http://127.0.0.1:{mlflow_port}"

    def start_mlflow(name: str) -> Process:
        proc = start_process(name, argv, tmp_path)
        wait_until(proc, http_ok(f"{server_url}/health"), "mlflow server /health", 90)
        return proc

    server = start_mlflow("mlflow")
    via_rest = TagwatchSettings(mlflow_tracking_uri=server_url)
    models = tmp_path / "models"
    try:
        with predictor(models, tmp_path, free_port(), **serving_env(via_rest, POLL)) as (
            url,
            proc,
        ):
            assert served_versions(url) == {v1}
            Registry(registry_settings).promote(2, reason="via REST test", actor="pytest")
            wait_served(proc, url, v2)
            server.stop()
            wait_until(
                proc,
                lambda: (
                    (metric_value(metrics(url), "tagwatch_model_registry_errors_total") or 0) >= 2
                ),
                "registry errors counted while mlflow server is down",
                timeout=60,
            )
            r = requests.post(f"{url}/predict", json={"title": "python"})
            assert r.status_code == 200 and r.json()["model_version"] == v2
            assert "model registry unreachable" in proc.log_path.read_text()
            server = start_mlflow("mlflow-again")
            Registry(registry_settings).promote(1, reason="rollback via REST", actor="pytest")
            wait_served(proc, url, v1)
            assert "model registry reachable again" in proc.log_path.read_text()
    finally:
        server.stop()


def test_local_pointer_swap_refuses_a_broken_model(
    small_artefacts: dict[str, Path], tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """``TAGWATCH_FOLLOW_REGISTRY=false``: models/LATEST is followed; a model that does not load
    is refused (the old model keeps serving, nothing fails, /readyz warns; the pointer still
    names what is wanted), and tried again once its file is repaired, with no restart."""
    models = tmp_path / "models"
    cache_artefact(small_artefacts["small-k20"], models)
    broken = models / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a pickle")
    (broken / "model_card.json").write_text(json.dumps({"version": "broken"}))
    env = {"TAGWATCH_MODEL_POLL_SECONDS": str(POLL), "TAGWATCH_LOG_LEVEL": "INFO"}
    with predictor(models, tmp_path, free_port(), **env) as (url, proc):
        assert "mlflow" not in proc.log_path.read_text().lower()
        with Load(url, threads=2, max_seconds=60) as load:
            (models / "LATEST").write_text("broken\n")
            wait_until(
                proc,
                lambda: (
                    metric_value(metrics(url), "tagwatch_model_swaps_total", 'outcome="refused"')
                    == 1
                ),
                "the broken model refused",
                timeout=60,
            )
            time.sleep(1.0)
        assert not load.failed(), load.failed()[:3]
        assert {a.version for a in load.answers} == {"small-k20"}
        # the predictor never rewrites the shared pointer: it still names the wanted version
        assert (models / "LATEST").read_text().strip() == "broken"
        wait_served(proc, url, "small-k20", timeout=30)
        assert "model broken refused" in proc.log_path.read_text()
        ready = requests.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["refused_model"]["version"] == "broken"
        assert "cannot load model" in ready.json()["warnings"][0]
        assert (
            metric_value(
                metrics(url),
                "tagwatch_model_refused_info",
                'reason="unloadable",served="small-k20",version="broken"',
            )
            == 1
        )
        time.sleep(3 * POLL)  # unchanged: not tried again (one refusal, no retry loop)
        assert metric_value(metrics(url), "tagwatch_model_swaps_total", 'outcome="refused"') == 1
        # repaired (a good model file in its place): tried again on the next poll
        t_repaired = time.monotonic()
        shutil.copy(small_artefacts["small-k30"] / "model.joblib", broken / "model.joblib")
        wait_served(proc, url, "broken", timeout=60)
        back = time.monotonic() - t_repaired
        assert "tagwatch_model_refused_info{" not in metrics(url)
        assert "warnings" not in requests.get(f"{url}/readyz", timeout=5).json()
        print(f"repaired model file served again {back:.1f} s later (poll {POLL} s), no restart")


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: TagwatchSettings,
    *args: str,
) -> tuple[int, str, str]:
    """``python -m lifecycle ARGS`` in this process (MLflow is imported once): code, out, err."""
    from lifecycle.__main__ import main

    monkeypatch.setenv("TAGWATCH_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("TAGWATCH_MLFLOW_ARTIFACTS_DIR", str(settings.mlflow_artifacts_dir))
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_promote_bad_input_changes_nothing(
    registry_settings: TagwatchSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lifecycle.registry import Registry

    registry = Registry(registry_settings)
    runs_before = len(registry.client.search_runs([registry.experiment_id]))
    cases = [
        (["--version", "99", "--reason", "r"], "--version"),
        (["--version", "abc", "--reason", "r"], "--version"),
        (["--version", "0", "--reason", "r"], "--version"),
        (["--version", "2"], "--reason"),
        (["--version", "2", "--reason", "   "], "--reason"),
    ]
    for args, field in cases:
        code, _, err = run_main(monkeypatch, capsys, registry_settings, "promote", *args)
        assert code == 2, (args, code, err)
        last = err.strip().splitlines()[-1]
        assert field in last and "Traceback" not in err, (args, err)
    # the real CLI, MLflow unreachable: one line, exit 1
    closed = TagwatchSettings(mlflow_tracking_uri="http://127.0.0.1:9")  # discard port: refused
    out = lifecycle_cli(closed, "promote", "--version", "2", "--reason", "r")
    assert out.returncode == 1, out.stderr
    assert "MLflow" in out.stderr and "nothing changed" in out.stderr
    assert "Traceback" not in out.stderr
    champion = registry.champion()
    assert champion is not None and champion.version == 1, "the alias must not move"
    assert len(registry.client.search_runs([registry.experiment_id])) == runs_before
    # promoting the champion again keeps the alias and re-stamps the version (a predictor
    # that refused it tries it again): one more promotion run, with who and why
    stamp = champion.tags.get("promoted_at")
    time.sleep(1.1)  # promoted_at has a 1 s resolution
    code, out_, _ = run_main(
        monkeypatch, capsys, registry_settings, "promote", "--version", "1", "--reason", "again"
    )
    assert code == 0 and "is already version 1: promoted again" in out_, out_
    again = registry.champion()
    assert again is not None and again.version == 1
    assert again.tags["promoted_reason"] == "again" and again.tags["promoted_at"] != stamp
    assert len(registry.client.search_runs([registry.experiment_id])) == runs_before + 1


def test_workers_never_import_mlflow(models_dir: Path, tmp_path: Path) -> None:
    """What a gunicorn worker runs (create_app) loads the local artefact without MLflow."""
    code = (
        "import sys\n"
        "from exporter.app import create_app\n"
        "from exporter.settings import PredictorSettings\n"
        f"settings = PredictorSettings(models_dir={str(models_dir)!r}, store_enabled=False)\n"
        "app = create_app(settings)\n"
        "assert app.extensions['tagwatch'].artefact is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
