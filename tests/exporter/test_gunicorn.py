"""Integration: the real predictor under gunicorn, several workers, one store, summed metrics."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from tests.processes import metric_value, start_predictor

API_TOKEN = "gunicorn-test-api-token-0123"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@contextmanager
def serve(
    models_dir: Path, tmp_path: Path, port: int, workers: int = 3, **extra_env: str
) -> Iterator[str]:
    """The real predictor on ``port`` with its store in ``tmp_path`` (kept across restarts)."""
    (tmp_path / "api_token").write_text(API_TOKEN)
    proc = start_predictor(
        models_dir,
        port,
        tmp_path,
        tmp_path / "store.sqlite3",
        TAGWATCH_WORKERS=str(workers),
        TAGWATCH_API_TOKEN_FILE=str(tmp_path / "api_token"),
        **extra_env,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def metrics_when(url: str, ready: Callable[[str], bool], timeout: float = 5.0) -> str:
    """/metrics once ``ready`` holds: other workers apply their observations within ~1 s."""
    deadline = time.monotonic() + timeout
    while True:
        text = requests.get(f"{url}/metrics", timeout=5).text
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def sample(text: str, name: str, labels: str = "") -> float:
    return metric_value(text, name, labels) or 0.0


@pytest.mark.slow
def test_workers_share_totals_and_store_survives_restart(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    n = 60
    with serve(models_dir, tmp_path, port) as url:
        session = requests.Session()
        ids = []
        for i in range(n):
            r = session.post(f"{url}/predict", json={"title": f"python list comprehension {i}"})
            assert r.status_code == 200
            ids.append(r.json()["prediction_id"])
            # a fresh connection each time lets the kernel hand requests to every worker
            session.close()
        for pid in ids[:10]:
            r = requests.post(f"{url}/feedback", json={"prediction_id": pid, "tags": ["python"]})
            assert r.status_code == 200
        bad = requests.post(f"{url}/predict", json={"title": ""})
        assert bad.status_code == 400
        text = metrics_when(
            url,
            lambda t: (
                sample(t, "tagwatch_predictions_total") == n
                and sample(t, "tagwatch_feedback_total") == 10
                and sample(t, "tagwatch_tag_feedback_total", 'outcome="tp",tag="python"')
                + sample(t, "tagwatch_tag_feedback_total", 'outcome="fn",tag="python"')
                == 10
                and sample(t, "tagwatch_http_requests_total", 'endpoint="predict",status="400"')
                == 1
            ),
        )
        pids = set(re.findall(r'pid="(\d+)"', text))
        assert sample(text, "tagwatch_predictions_total") == n
        assert sample(text, "tagwatch_feedback_total") == 10
        # per tag, summed over the workers' files: python was given 10 times (issue 17)
        tag = "tagwatch_tag_feedback_total"
        python = [sample(text, tag, f'outcome="{o}",tag="python"') for o in ("tp", "fn")]
        assert sum(python) == 10
        assert len([line for line in text.splitlines() if line.startswith(tag + "{")]) == 300
        assert 'tagwatch_model_validation_tag_f1_ratio{tag="python"}' in text
        assert sample(text, "tagwatch_inference_seconds_count") == n
        assert sample(text, "tagwatch_http_requests_total", 'endpoint="predict",status="200"') == n
        assert sample(text, "tagwatch_http_requests_total", 'endpoint="predict",status="400"') == 1
        assert 'tagwatch_model_info{trained_until="2012-01-01",version="test"} 1.0' in text
        assert not pids, "multiprocess gauges must not expose worker pids"
        out = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0 and not out.stdout.strip(), out.stdout
    # restart: stored rows are still there, feedback still idempotent, counters start anew
    with serve(models_dir, tmp_path, port) as url:
        r = requests.get(f"{url}/predictions/{ids[0]}", headers=AUTH)
        assert r.status_code == 200
        assert r.json()["feedback"]["tags"] == ["python"]
        assert requests.get(f"{url}/predictions/{ids[-1]}", headers=AUTH).status_code == 200
        again = requests.post(f"{url}/feedback", json={"prediction_id": ids[0], "tags": ["python"]})
        assert again.json()["duplicate"] is True
        text = requests.get(f"{url}/metrics").text
        assert sample(text, "tagwatch_predictions_total") == 0
        assert sample(text, "tagwatch_feedback_total") == 0
    conn = sqlite3.connect(tmp_path / "store.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == n
    assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 10
    conn.close()


def predictions_per_worker(multiproc: Path) -> dict[str, float]:
    """tagwatch_predictions_total as each worker wrote it in its own multiprocess file."""
    out = {}
    for path in multiproc.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        out[path.stem] = sum(
            value for key, value, *_ in values if json.loads(key)[1] == "tagwatch_predictions_total"
        )
    return out


@pytest.mark.slow
def test_requests_spread_over_workers(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Concurrent clients are served by more than one worker process, and counted once."""
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    multiproc = tmp_path / "prometheus-multiproc"
    with serve(models_dir, tmp_path, port, workers=3) as url:
        deadline = time.monotonic() + 30  # every worker has loaded the app (its files exist)
        while len(list(multiproc.glob("counter_*.db"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)

        def one(i: int) -> int:
            r = requests.post(f"{url}/predict", json={"title": f"java spring boot {i}"})
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(300)))
        assert codes == [200] * 300
        text = metrics_when(url, lambda t: sample(t, "tagwatch_predictions_total") == 300)
        assert sample(text, "tagwatch_predictions_total") == 300
        per_worker = predictions_per_worker(multiproc)
        assert sum(per_worker.values()) == 300
        busy = [pid for pid, n in per_worker.items() if n > 0]
        assert len(busy) >= 2, f"one worker served everything: {per_worker}"
