"""A real stack for the dashboard tests: predictor + drift + Prometheus, fed by a real replay.

The predictor (gunicorn) serves a few hundred real questions from 2011 to 2020 sent by
:mod:`exporter.replay`, with feedback. The drift job needs *complete* time bins to judge, which
live traffic cannot give within seconds, so the store first receives two earlier days of real
predictions (late-2011 and 2020 questions analysed by the same model, written through the
store's public API). Prometheus runs a config derived from ``prometheus/prometheus.yml`` with a
1 s scrape and evaluation interval and the same rule files.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from exporter.replay import ReplayConfig, Replayer, ReplaySummary, select_questions
from store import FeedbackRecord, PredictionRecord, open_store
from tagger.artefact import load_artefact
from tagger.data import load_questions
from tagger.metrics import coverage, jaccard
from tagger.settings import TagwatchSettings
from tests.processes import (
    REPO_ROOT,
    Process,
    http_ok,
    metric_value,
    python_module,
    start_predictor,
    start_process,
    wait_until,
    write_lifecycle_token,
)

HISTORY_ROWS_PER_DAY = 150
REPLAY_QUESTIONS = 300


@dataclass(frozen=True)
class Stack:
    prometheus_url: str
    predictor_url: str
    drift_url: str
    replay: ReplaySummary
    work_dir: Path

    def query(self, expr: str, **params: Any) -> dict[str, Any]:
        """An instant query (or a range query when ``start`` is given); raises on HTTP errors."""
        path = "query_range" if "start" in params else "query"
        r = requests.post(
            f"{self.prometheus_url}/api/v1/{path}", data={"query": expr, **params}, timeout=10
        )
        body: dict[str, Any] = r.json()
        return body


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill_history(models_dir: Path, store_url: str, questions: pd.DataFrame) -> int:
    """Two complete past days of real predictions with feedback: late 2011, then 2020."""
    model = load_artefact(models_dir).model
    version = load_artefact(models_dir).version
    vocabulary = set(model.classes)
    today = pd.Timestamp.now(tz="UTC").normalize()
    periods = [
        (today - pd.Timedelta(days=2), ("2011-10-01", "2012-01-01")),
        (today - pd.Timedelta(days=1), ("2020-02-01", "2021-01-01")),
    ]
    store = open_store(store_url)
    records: list[PredictionRecord] = []
    feedback: list[FeedbackRecord] = []
    for day, (since, until) in periods:
        picked = select_questions(
            questions, pd.Timestamp(since, tz="UTC"), pd.Timestamp(until, tz="UTC")
        )
        picked = picked.iloc[:: max(1, len(picked) // HISTORY_ROWS_PER_DAY)]
        picked = picked.iloc[:HISTORY_ROWS_PER_DAY]
        step = 86000 / len(picked)
        for i, row in enumerate(picked.itertuples(index=False)):
            at = day.timestamp() + 60 + i * step
            analysis = model.analyse(row.title, row.body)
            pid = uuid.uuid4().hex
            records.append(
                PredictionRecord(
                    id=pid, created_at=at, title=row.title, body=row.body, tags=analysis.tags,
                    scores=analysis.scores, inference_seconds=0.001, model_version=version,
                    features=analysis.features, url=row.url,
                )
            )  # fmt: skip
            feedback.append(
                FeedbackRecord(
                    prediction_id=pid, tags=list(row.tags),
                    coverage=coverage(analysis.tags, row.tags),
                    jaccard=jaccard(analysis.tags, row.tags),
                    n_unknown_tags=sum(1 for t in row.tags if t not in vocabulary),
                    created_at=at + 30,
                )
            )  # fmt: skip
    store.save_predictions(records)
    for f in feedback:
        store.save_feedback(f)
    store.close()
    return len(records)


def start_lifecycle(models_dir: Path, store_url: str, work: Path, port: int) -> Process:
    """``python -m lifecycle serve`` with the test model as champion in a fresh MLflow, retraining
    once at start on the store's labelled history (a small hold-out: the gate rejects)."""
    from lifecycle.registry import Registry
    from tagger.tracking import log_training

    env = {
        "TAGWATCH_MODELS_DIR": str(work / "lifecycle-models"),
        "TAGWATCH_STORE_URL": store_url,
        "TAGWATCH_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(work / "mlflow-artifacts"),
        "TAGWATCH_HOST": "127.0.0.1",
        "TAGWATCH_PORT": str(port),
        "TAGWATCH_RETRAIN_MIN_LABELLED": "100",
        # a hold-out of ~120 questions: the gate judges (and rejects), so every gauge of the
        # lifecycle dashboard has a value; under the default 200 the retrain is skipped unfit
        "TAGWATCH_GATE_MIN_HOLDOUT_ROWS": "50",
        **write_lifecycle_token(work / "secrets"),
    }
    settings = TagwatchSettings(
        mlflow_tracking_uri=env["TAGWATCH_MLFLOW_TRACKING_URI"],
        mlflow_artifacts_dir=Path(env["TAGWATCH_MLFLOW_ARTIFACTS_DIR"]),
    )
    registered = log_training(settings, models_dir / "test", run_name="grafana test champion")
    Registry(settings).promote(registered.version, reason="grafana test", actor="pytest")
    proc = start_process(
        "lifecycle", [*python_module("lifecycle", "serve"), "--run-on-start"], work, env
    )
    wait_until(proc, http_ok(f"http://127.0.0.1:{port}/healthz"), "lifecycle /healthz", 60)
    return proc


def prometheus_test_config(targets: dict[str, str]) -> dict[str, Any]:
    """The production config with 1 s intervals, absolute rule paths and loopback targets."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(REPO_ROOT / "prometheus" / r) for r in config["rule_files"]]
    config.pop("alerting", None)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    missing = set(targets) - set(jobs)
    assert not missing, f"prometheus/prometheus.yml has no job(s) {missing}"
    config["scrape_configs"] = [
        {**jobs[name], "static_configs": [{"targets": [target]}]}
        for name, target in targets.items()
    ]
    return config


def _prom_value(stack_query: Any, expr: str) -> float | None:
    body = stack_query(expr)
    result = body.get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN: not there yet


def _has_value(prom: Any, expr: str) -> Any:
    return lambda: _prom_value(prom, expr) is not None


@pytest.fixture(scope="session")
def stack(
    models_dir: Path, tagwatch_settings: TagwatchSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    started = time.monotonic()
    work = tmp_path_factory.mktemp("grafana-stack")
    store_path = work / "tagwatch.sqlite3"
    store_url = f"sqlite:///{store_path}"
    questions = load_questions(tagwatch_settings.titles_path)
    fill_history(models_dir, store_url, questions)

    ports = {"predictor": _free_port(), "drift": _free_port(), "prometheus": _free_port()}
    ports["lifecycle"] = _free_port()
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes: list[Process] = []
    try:
        drift = start_process(
            "drift",
            python_module("drift"),
            work,
            {
                "TAGWATCH_MODELS_DIR": str(models_dir),
                "TAGWATCH_STORE_URL": store_url,
                "TAGWATCH_HOST": "127.0.0.1",
                "TAGWATCH_PORT": str(ports["drift"]),
                "TAGWATCH_REPORTS_DIR": str(work / "reports/drift"),
                "TAGWATCH_STATE_DIR": str(work / "drift-state"),
                "TAGWATCH_RUN_ON_START": "true",
            },
        )
        processes.append(drift)
        processes.append(start_lifecycle(models_dir, store_url, work, ports["lifecycle"]))
        config_path = work / "prometheus.yml"
        config_path.write_text(
            yaml.safe_dump(
                prometheus_test_config(
                    {
                        "predictor": f"127.0.0.1:{ports['predictor']}",
                        "drift": f"127.0.0.1:{ports['drift']}",
                        "lifecycle": f"127.0.0.1:{ports['lifecycle']}",
                    }
                )
            )
        )
        prometheus = start_process(
            "prometheus",
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--log.level=warn",
            ],
            work,
        )
        processes.append(prometheus)
        predictor = start_predictor(models_dir, ports["predictor"], work, store_path)
        processes.append(predictor)
        wait_until(prometheus, http_ok(f"{urls['prometheus']}/-/ready"), "Prometheus ready", 30)

        def prom(expr: str) -> dict[str, Any]:
            r = requests.get(
                f"{urls['prometheus']}/api/v1/query", params={"query": expr}, timeout=5
            )
            body: dict[str, Any] = r.json()
            return body

        wait_until(
            prometheus,
            lambda: _prom_value(prom, 'up{job="predictor"}') == 1.0,
            "the first scrape of the predictor",
            30,
        )
        # the replay, paced so that Prometheus scrapes the counters while they grow
        recent = select_questions(questions, pd.Timestamp("2011-09-01", tz="UTC"))
        picked = recent.iloc[:: max(1, len(recent) // REPLAY_QUESTIONS)]
        replayer = Replayer(
            ReplayConfig(
                url=urls["predictor"], speed=0, rate=80, feedback_delay=0.5, progress=False
            )
        )
        summary = replayer.run(picked)
        assert summary.errors == 0 and summary.aborted is None, summary.format()

        wait_until(
            drift,
            lambda: (
                (
                    metric_value(
                        requests.get(f"{urls['drift']}/metrics", timeout=5).text,
                        "tagwatch_drift_bins_judged",
                    )
                    or 0
                )
                >= 1
            ),
            "the first drift run to judge a bin",
            180,
        )
        for expr, what in (
            ("job:tagwatch_feedback_jaccard:mean1h > 0", "the quality recording rules"),
            ('up{job="drift"} == 1', "the first scrape of the drift job"),
            ("count(tagwatch_drift_feature_status)", "the drift status in Prometheus"),
            ("tagwatch_retrain_last_success_timestamp_seconds > 0", "the lifecycle's retrain"),
        ):
            wait_until(prometheus, _has_value(prom, expr), what, 60)
        print(f"\nstack ready in {time.monotonic() - started:.1f} s; {summary.format()}")
        yield Stack(urls["prometheus"], urls["predictor"], urls["drift"], summary, work)
    finally:
        for process in reversed(processes):
            process.stop()
