"""The fleet end to end: two predictor replicas (two gunicorn masters) sharing one real
PostgreSQL, a real Prometheus with the repository's rules scraping both (targets from file_sd
files written by python -m stack.config), clients spread over both replicas with their
feedback sent to the OTHER replica, one replica SIGKILLed (master and workers): PredictorDown
fires for that instance only, the other keeps serving, and once the killed replica restarts on
its spool directory every acknowledged prediction is in PostgreSQL. The drift job then reads the
shared store and judges.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import requests
import yaml

from exporter.replay import select_questions
from stack.config import (
    Service,
    load_services,
    local_prometheus_config,
    scrape_targets,
    write_file_sd,
)
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.browser.stack import free_ports
from tests.deploy.conftest import check_prometheus_config, run_stack_module
from tests.grafana.conftest import fill_history
from tests.processes import (
    REPO_ROOT,
    Process,
    http_ok,
    run_module,
    start_predictor,
    start_process,
    wait_until,
)

CLIENT_QUESTIONS = 120  # spread over both replicas, each with feedback to the other one


def _prometheus_config(work: Path, ports: dict[str, int]) -> Path:
    """The production config (prometheus/prometheus.yml and its rules) with 1 s intervals and
    the two replicas as file_sd targets of job "predictor", as `make up-fleet` writes it."""
    services = [
        Service("predictor", ports["a"], "/readyz", True, "-", "", job="predictor"),
        Service("predictor2", ports["b"], "/readyz", True, "-", "", job="predictor"),
    ]
    base = yaml.safe_load((REPO_ROOT / "prometheus/prometheus.yml").read_text())
    config = local_prometheus_config(base, services, "targets")
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "predictor"]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(REPO_ROOT / "prometheus" / r) for r in base["rule_files"]]
    config.pop("alerting", None)
    write_file_sd(work / "targets", services)
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Fleet:
    """The two replicas ("a", "b"), Prometheus and the PostgreSQL database they share."""

    def __init__(self, models_dir: Path, work: Path, store_url: str, ports: dict[str, int]):
        self.models_dir = models_dir
        self.work = work
        self.store_url = store_url
        self.ports = ports
        self.replicas: dict[str, Process] = {}
        self.prometheus: Process | None = None

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def start_replica(self, name: str) -> Process:
        """``python -m exporter serve`` (gunicorn, 2 workers) on the shared store, with its own
        metrics and spool directories (kept across a restart: the spool is replayed)."""
        replica_dir = self.work / f"replica-{name}"
        proc = start_predictor(
            self.models_dir,
            self.ports[name],
            replica_dir,
            TAGWATCH_STORE_URL=self.store_url,
            TAGWATCH_STORE_SPOOL_DIR=str(replica_dir / "spool"),
            TAGWATCH_WORKERS="2",
        )
        self.replicas[name] = proc
        return proc

    def start_prometheus(self) -> Process:
        config = _prometheus_config(self.work, self.ports)
        self.prometheus = start_process(
            "prometheus",
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
                "--log.level=warn",
            ],
            self.work,
        )
        wait_until(self.prometheus, http_ok(self.url("prometheus", "/-/ready")), "Prometheus", 30)
        return self.prometheus

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(self.url("prometheus", "/api/v1/query"), params={"query": expr}, timeout=5)
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, str]]:
        r = requests.get(self.url("prometheus", "/api/v1/alerts"), timeout=5)
        return [
            a["labels"]
            for a in r.json()["data"]["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        ]

    def stop(self) -> None:
        for proc in [*self.replicas.values(), self.prometheus]:
            if proc is not None:
                proc.stop()


def _db_count(url: str, table: str, ids: list[str]) -> int:
    column = "id" if table == "predictions" else "prediction_id"
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT count(DISTINCT {column}) FROM {table} WHERE {column} = ANY(%s)", (ids,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _predict(base: str, title: str, body: str) -> tuple[str, list[str]]:
    r = requests.post(f"{base}/predict", json={"title": title, "body": body}, timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    return data["prediction_id"], data["tags"]


def test_services_conf_defines_the_fleet_once() -> None:
    """`make up` runs the `all` services; `make up-fleet` adds PostgreSQL and predictor2, which
    Prometheus scrapes as a second instance of job "predictor" (static list or file_sd)."""
    normal = {s.name: s for s in load_services(env={})}
    fleet = {s.name: s for s in load_services(env={"STACK_FLEET": "1"})}
    assert set(fleet) - set(normal) == {"postgres", "predictor2"}
    assert fleet["predictor2"].job == "predictor" and fleet["postgres"].job is None
    assert scrape_targets(list(fleet.values()))["predictor"] == [
        f"127.0.0.1:{fleet['predictor'].port}",
        f"127.0.0.1:{fleet['predictor2'].port}",
    ]
    assert scrape_targets(list(normal.values()))["predictor"] == [
        f"127.0.0.1:{normal['predictor'].port}"
    ]
    moved = load_services(env={"STACK_FLEET": "1", "STACK_PORT_PREDICTOR2": "18010"})
    assert {s.name: s.port for s in moved}["predictor2"] == 18010


def test_fleet_prometheus_config_with_file_sd(tmp_path: Path) -> None:
    run_stack_module(
        "stack.config", "prometheus", "--output", str(tmp_path), "--file-sd",
        env={**os.environ, "STACK_FLEET": "1", "STACK_PORT_PREDICTOR2": "18010"},
    )  # fmt: skip
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["predictor"]["file_sd_configs"] == [{"files": ["targets/predictor.json"]}]
    assert "static_configs" not in jobs["predictor"]
    (group,) = yaml.safe_load((tmp_path / "targets/predictor.json").read_text())
    assert group["targets"][1] == "127.0.0.1:18010"
    check_prometheus_config(tmp_path / "prometheus.yml")


def test_stack_env_of_the_fleet() -> None:
    """stack-env.sh: the fleet's store is the PostgreSQL of postgres.sh, the password in a
    pgpass file (not the URL), each predictor its own spool; `make up` stays on SQLite."""
    show = (
        'source scripts/stack-env.sh; echo "$STACK_VAR|$TAGWATCH_STORE_URL|${PGPASSFILE:-}|'
        '${TAGWATCH_STORE_SPOOL_DIR:-}"; printf "%s\\n" "${STACK_CHECKS[@]}"'
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TAGWATCH_", "STACK_"))}
    base["PGPASSFILE"] = ""
    normal = subprocess.run(
        ["bash", "-c", show], cwd=REPO_ROOT, env=base, capture_output=True, text=True, timeout=30
    ).stdout.splitlines()
    assert normal[0] == f"{REPO_ROOT}/var|sqlite:///{REPO_ROOT}/var/tagwatch.sqlite3||"
    assert not any(c.startswith(("postgres|", "predictor2|")) for c in normal[1:])
    fleet = subprocess.run(
        ["bash", "-c", show], cwd=REPO_ROOT, env={**base, "STACK_FLEET": "1"},
        capture_output=True, text=True, timeout=30,
    ).stdout.splitlines()  # fmt: skip
    var = f"{REPO_ROOT}/var/fleet"
    assert fleet[0] == (
        f"{var}|postgresql://tagwatch@127.0.0.1:15432/tagwatch|{var}/secrets/pgpass|"
        f"{var}/spool/predictor"
    )
    assert "postgres|tcp://127.0.0.1:15432" in fleet[1:]
    assert "predictor2|http://127.0.0.1:8010/readyz" in fleet[1:]


@pytest.fixture
def fleet(models_dir: Path, postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(models_dir, tmp_path, postgres_url, free_ports(["a", "b", "prometheus"]))
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.mark.slow
def test_two_replicas_share_postgres_survive_a_killed_replica_and_feed_drift(
    fleet: Fleet, tagwatch_settings: TagwatchSettings, models_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    questions = load_questions(tagwatch_settings.titles_path)
    # two complete past days in the shared store (2011, then 2020): bins for the drift job
    history = fill_history(models_dir, fleet.store_url, questions)

    # both replicas start together: one migrates the schema under the advisory lock
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(fleet.start_replica, ["a", "b"]))
    fleet.start_prometheus()
    wait_until(
        fleet.prometheus,
        lambda: (
            sorted(float(s["value"][1]) for s in fleet.query('up{job="predictor"}')) == [1.0, 1.0]
        ),
        "Prometheus to scrape both replicas",
        30,
    )

    # --- clients spread over both replicas; each feedback goes to the OTHER replica -------
    recent = select_questions(questions, pd.Timestamp("2020-01-01", tz="UTC"))
    picked = recent.iloc[:: max(1, len(recent) // CLIENT_QUESTIONS)].iloc[:CLIENT_QUESTIONS]
    served: dict[str, list[str]] = {"a": [], "b": []}
    feedback_status: dict[int, int] = {}

    def client(i: int, row: Any) -> None:
        name, other = ("a", "b") if i % 2 == 0 else ("b", "a")
        pid, _ = _predict(fleet.url(name), row.title, row.body)
        served[name].append(pid)
        r = requests.post(
            fleet.url(other, "/feedback"),
            json={"prediction_id": pid, "tags": list(row.tags)},
            timeout=10,
        )
        assert r.status_code in (200, 202), (r.status_code, r.text)
        feedback_status[r.status_code] = feedback_status.get(r.status_code, 0) + 1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(client, i, row) for i, row in enumerate(picked.itertuples())]:
            f.result()
    acked = served["a"] + served["b"]
    assert len(acked) == len(picked) and len(served["a"]) == len(served["b"])
    print(f"\nfeedback to the other replica: {feedback_status} (202: pending, resolved later)")
    wait_until(
        None,
        lambda: _db_count(fleet.store_url, "feedback", acked) == len(acked),
        "every cross-replica feedback stored in PostgreSQL",
        30,
    )

    # --- kill replica b (master and workers) right after it acknowledged a burst ----------
    burst = [
        _predict(fleet.url("b"), row.title, row.body)[0] for row in picked.iloc[:20].itertuples()
    ]
    fleet.replicas["b"].signal(signal.SIGKILL)
    fleet.replicas["b"].popen.wait(timeout=10)
    killed_at = time.monotonic()
    acked += burst
    unshipped = len(burst) - _db_count(fleet.store_url, "predictions", burst)
    print(f"replica b killed; {unshipped} of its last {len(burst)} acknowledged rows not yet in PG")

    # the fleet keeps serving on a
    after = [
        _predict(fleet.url("a"), row.title, row.body)[0] for row in picked.iloc[20:40].itertuples()
    ]
    acked += after

    # the drift job (one run) on the shared store while PredictorDown's `for:` runs
    drift = run_module(
        "drift", "run-once",
        env={
            **os.environ,
            "TAGWATCH_MODELS_DIR": str(models_dir),
            "TAGWATCH_STORE_URL": fleet.store_url,
            "TAGWATCH_REPORTS_DIR": str(tmp_path / "reports/drift"),
            "TAGWATCH_STATE_DIR": str(tmp_path / "drift-state"),
        },
    )  # fmt: skip
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert (tmp_path / "reports/drift/latest.html").is_file(), drift.stderr[-2000:]
    print(f"drift run-once on PostgreSQL ({history} history rows): {drift.stderr.strip()[-300:]}")

    # PredictorDown for b only (for: 30 s), never for a
    instance_b = f"127.0.0.1:{fleet.ports['b']}"
    wait_until(
        fleet.prometheus,
        lambda: [a["instance"] for a in fleet.alerts("PredictorDown")] == [instance_b],
        "PredictorDown for replica b",
        60,
    )
    print(f"PredictorDown fired {time.monotonic() - killed_at:.1f} s after the kill")
    assert fleet.alerts("PredictorDown", "pending") == []
    up = {s["metric"]["instance"]: float(s["value"][1]) for s in fleet.query("up")}
    assert up == {f"127.0.0.1:{fleet.ports['a']}": 1.0, instance_b: 0.0}
    # the fleet's recorded request rate still comes from a
    assert fleet.query('job:tagwatch_http_requests:rate5m{job="predictor"} > 0')

    # --- b restarts on the same spool directory: its orphan spool is replayed -------------
    fleet.start_replica("b")
    wait_until(
        fleet.replicas["b"],
        lambda: _db_count(fleet.store_url, "predictions", acked) == len(acked),
        "every acknowledged prediction in PostgreSQL",
        30,
    )
    with psycopg.connect(fleet.store_url) as conn:
        total = conn.execute("SELECT count(*) FROM predictions").fetchone()
    assert total is not None and total[0] == history + len(acked), "stored exactly once each"
    wait_until(
        fleet.prometheus,
        lambda: fleet.alerts("PredictorDown") == [],
        "PredictorDown resolved after the restart",
        30,
    )
    print(f"fleet test: {len(acked)} acknowledged, 0 lost, {time.monotonic() - started:.1f} s")
