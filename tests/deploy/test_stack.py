"""``make up`` (scripts/up.sh) for real: every port moved away from its default through
scripts/services.conf's ``STACK_PORT_<NAME>``, the waiting drift page from the first start, a
permanent predictor problem failing fast with /readyz's reason, and a second ``make up`` that
refuses to call a stack serving a deleted model "running"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.browser.stack import REPO_ROOT, free_ports, load_services, make_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
        reason="prometheus / prometheus-alertmanager not installed",
    ),
]


def test_stack_on_non_default_ports(tmp_path: Path, models_dir: Path) -> None:
    services = load_services()
    ports = free_ports([s.name for s in services])
    assert all(ports[s.name] != s.port for s in services)
    # a copy of the model: this test deletes it while the stack runs
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    # as `make up` runs it: the predictor follows the stack's own MLflow registry
    stack = make_stack(tmp_path, models, ports, {"TAGWATCH_FOLLOW_REGISTRY": "true"})
    up = stack.script("up.sh")
    try:
        assert up.returncode == 0, up.stdout + up.stderr + stack.log_tail()
        # the model on disk is registered as the champion as it is, not retrained
        assert "registering the model on disk" in up.stdout and "training" not in up.stdout
        assert sorted(p.name for p in models.iterdir()) == sorted(
            p.name for p in models_dir.iterdir()
        )
        # the printed URLs are the moved ports, and each opens
        for s in services:
            assert f"127.0.0.1:{ports[s.name]}" in up.stdout, (s.name, up.stdout)
        for url in [w for w in up.stdout.split() if w.startswith("http://127.0.0.1:")]:
            assert requests.get(url, timeout=10).status_code == 200, url
        assert "/classic/alerts" in up.stdout or f"{ports['prometheus']}/alerts" in up.stdout
        # Prometheus scrapes every scraped service at its moved port
        targets = requests.get(stack.url("prometheus", "/api/v1/targets"), timeout=10).json()
        got = {t["labels"]["job"]: t["scrapeUrl"] for t in targets["data"]["activeTargets"]}
        for s in services:
            if s.scrape:
                assert got[s.name].startswith(f"http://127.0.0.1:{ports[s.name]}/"), got
        am = yaml.safe_load((stack.var / "alertmanager" / "alertmanager.yml").read_text())
        assert am["global"]["smtp_smarthost"] == f"127.0.0.1:{ports['mailsink']}"
        # latest.html from the first start: what is judged, and when
        page = requests.get(stack.url("drift", "/reports/latest.html"), timeout=10)
        assert page.status_code == 200
        assert "no report yet" in page.text and "02:00" in page.text
        assert "held-out validation questions" in page.text
        # the runbook, rendered, with one anchor per alert
        runbook = requests.get(stack.url("drift", "/docs/runbook.md"), timeout=10)
        assert runbook.status_code == 200 and 'id="datadriftdetected"' in runbook.text

        # models/ deleted while the stack runs: a second `make up` says what is wrong
        shutil.rmtree(models)
        again = stack.script("up.sh", timeout=60)
        assert again.returncode == 1, again.stdout + again.stderr
        assert "already running" in again.stderr and "does not exist" in again.stderr
    finally:
        down = stack.script("down.sh", timeout=90)
        assert down.returncode == 0, down.stdout + down.stderr


def test_up_fails_fast_with_the_readyz_reason(tmp_path: Path, models_dir: Path) -> None:
    models = tmp_path / "models"  # a copy: make up registers it in this stack's own MLflow
    shutil.copytree(models_dir, models)
    stack = make_stack(
        tmp_path,
        models,
        free_ports([s.name for s in load_services()]),
        {"TAGWATCH_STORE_URL": "sqlite://var/x.sqlite3"},  # two slashes: a permanent problem
    )
    proc = subprocess.Popen(
        ["bash", str(REPO_ROOT / "scripts" / "up.sh")],
        cwd=REPO_ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # the first time the predictor states its problem...
        first_503 = None
        while proc.poll() is None and first_503 is None:
            try:
                if requests.get(stack.url("predictor", "/readyz"), timeout=1).status_code == 503:
                    first_503 = time.monotonic()
            except requests.RequestException:
                pass
            time.sleep(0.2)
        out, err = proc.communicate(timeout=120)
        # ...and make up gave up quoting it within 10 s (not after its 150 s timeout)
        assert first_503 is not None, out + err
        assert time.monotonic() - first_503 < 10, time.monotonic() - first_503
        assert proc.returncode == 1, out + err
        assert "predictor is not ready" in err, err
        assert "expected sqlite:///path/to/file.sqlite3" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
        stack.script("down.sh", timeout=90)
    assert not (stack.var / "run" / "stack.pid").exists()


def test_serve_without_gunicorn_fails_before_serving(tmp_path: Path) -> None:
    """``python -m exporter serve`` with an interpreter lacking gunicorn (outside the venv)."""
    code = (
        "import runpy, sys; sys.modules['gunicorn'] = None; sys.argv = ['exporter', 'serve'];"
        "runpy.run_module('exporter', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TAGWATCH_MODELS_DIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gunicorn is not installed" in proc.stderr and "virtualenv" in proc.stderr
    assert "serving on" not in proc.stdout + proc.stderr
