"""Deployment files: docker-compose.yml, the Docker-side Prometheus config, the Dockerfile, the
Procfile of ``make up``, the demo's Prometheus variant and the GitHub workflow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import check_prometheus_config, run_stack_module

REPO = Path(__file__).resolve().parents[2]
LONG_RUNNING = {
    "predictor", "predictor-2", "drift", "weekly", "prometheus", "alertmanager", "grafana",
    "mailpit", "mlflow", "lifecycle", "postgres",
}  # fmt: skip
PREDICTORS = ("predictor", "predictor-2")
PINNED_IMAGES = {
    "postgres": "postgres:15.8-bookworm",
    "prometheus": "prom/prometheus:v2.42.0",
    "alertmanager": "prom/alertmanager:v0.25.0",
    "grafana": "grafana/grafana:10.4.2",
    "mailpit": "axllent/mailpit:v1.18",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as docker-compose resolves it (anchors merged, variables substituted)."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    proc = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config: dict[str, Any] = yaml.safe_load(proc.stdout)
    return config


def test_compose_validates_and_runs_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == LONG_RUNNING | {"alertmanager-config", "replay"}
    for name, image in PINNED_IMAGES.items():
        assert services[name]["image"] == image
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name]["restart"] == "unless-stopped"
    for name in (*PREDICTORS, "drift", "weekly", "alertmanager-config", "mlflow", "lifecycle"):
        assert services[name]["image"] == "tagwatch:dev"
        assert services[name]["build"]["context"] == str(REPO)
    for name in PREDICTORS:
        assert services[name]["command"] == ["python", "-m", "exporter", "serve"]
    assert services["drift"]["command"] == ["python", "-m", "drift"]
    assert services["weekly"]["command"] == ["python", "-m", "alerting", "serve"]
    assert services["lifecycle"]["command"] == ["python", "-m", "lifecycle", "serve"]
    # Alertmanager's webhook reaches the lifecycle service by its compose name
    env = services["alertmanager-config"]["environment"]
    assert env["TAGWATCH_LIFECYCLE_WEBHOOK_URL"] == "http://lifecycle:8003/webhook"
    # the MLflow UI: the project's image (pinned mlflow), on loopback only, on the shared volume
    assert services["mlflow"]["entrypoint"] == ["mlflow", "server"]
    assert "sqlite:////var/lib/tagwatch/mlflow/mlflow.db" in services["mlflow"]["command"]
    ports = [p if isinstance(p, str) else f"{p['host_ip']}:{p['published']}:{p['target']}"
             for p in services["mlflow"]["ports"]]  # fmt: skip
    assert [p.split(":")[0] for p in ports] == ["127.0.0.1"]
    for name in (*PREDICTORS, "mlflow", "lifecycle"):
        assert any(
            (v if isinstance(v, str) else f"{v['source']}:{v['target']}").startswith(
                "mlflow:/var/lib/tagwatch/mlflow"
            )
            for v in services[name]["volumes"]
        ), services[name]["volumes"]


def test_compose_volumes_data_mount_and_secret(compose: dict[str, Any]) -> None:
    assert {"models", "store", "reports", "prometheus-data"} <= set(compose["volumes"])
    services = compose["services"]
    mounts = [
        (v["source"], v["target"], v.get("read_only", False)) if isinstance(v, dict)
        else (v.split(":")[0], v.split(":")[1], v.endswith(":ro"))
        for v in services["predictor"]["volumes"]
    ]  # fmt: skip
    data_dir = os.path.normpath(REPO / "../shared/data")  # compose does not follow symlinks
    assert (data_dir, "/data", True) in mounts  # the real data: mounted read-only, never copied
    assert ("models", "/var/lib/tagwatch/models", False) in mounts
    assert services["predictor"]["environment"]["TAGWATCH_TRAIN_IF_MISSING"] == "1"
    assert services["predictor-2"]["environment"]["TAGWATCH_TRAIN_IF_MISSING"] == "0"
    # the SMTP password only as a secret file, never in the environment
    assert set(compose["secrets"]) == {
        "smtp_password", "api_token", "link_secret", "grafana_admin_password", "mailpit_ui_auth",
        "postgres_password", "feedback_token", "id_secret", "lifecycle_token",
    }  # fmt: skip
    assert [s["source"] for s in services["alertmanager"]["secrets"]] == [
        "smtp_password", "lifecycle_token",
    ]  # fmt: skip
    # POST /retrain and /webhook need the lifecycle token: the service checks it, Alertmanager
    # sends it (the rendered receiver names the file in its own mount of the secret)
    token = "/run/secrets/lifecycle_token"
    assert "lifecycle_token" in [s["source"] for s in services["lifecycle"]["secrets"]]
    assert services["lifecycle"]["environment"]["TAGWATCH_LIFECYCLE_TOKEN_FILE"] == token
    assert services["alertmanager-config"]["environment"]["TAGWATCH_LIFECYCLE_TOKEN_FILE"] == token
    assert [s["source"] for s in services["weekly"]["secrets"]] == [
        "smtp_password", "link_secret", "postgres_password",
    ]  # fmt: skip
    for name, service in services.items():
        env = service.get("environment", {})
        assert not any(
            "PASSWORD" in k and not k.endswith(("_FILE", "GF_SECURITY_ADMIN_PASSWORD")) for k in env
        ), name
        if "TAGWATCH_SMTP_PASSWORD_FILE" in env:
            assert env["TAGWATCH_SMTP_PASSWORD_FILE"] == "/run/secrets/smtp_password"
    assert "--cluster.listen-address=" in services["alertmanager"]["command"]
    assert services["alertmanager"]["depends_on"]["alertmanager-config"] == {
        "condition": "service_completed_successfully"
    }
    assert (
        services["prometheus"]["command"][0]
        == "--config.file=/etc/prometheus/prometheus.docker.yml"
    )


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes."""
    return {
        (v["target"] if isinstance(v, dict) else v.split(":")[1]): (
            v["source"] if isinstance(v, dict) else v.split(":")[0]
        )
        for v in service.get("volumes", [])
    }


def test_postgres_store_and_two_predictor_replicas(compose: dict[str, Any]) -> None:
    """The fleet: a pinned PostgreSQL (healthcheck, password from a secret, loopback only) and
    two replicas on it, each with its own spool volume; `make up` stays on SQLite."""
    services = compose["services"]
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    assert [s["source"] for s in pg["secrets"]] == ["postgres_password"]
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert [host for host, _ in _published(pg)] == ["127.0.0.1"]
    assert _mounts(pg)["/var/lib/postgresql/data"] == "postgres-data"
    spools = set()
    for name in PREDICTORS:
        env = services[name]["environment"]
        assert env["TAGWATCH_STORE_URL"] == "postgresql://tagwatch@postgres:5432/tagwatch"
        assert env["TAGWATCH_STORE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
        assert "postgres_password" in [s["source"] for s in services[name]["secrets"]]
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
        spools.add(_mounts(services[name])[env["TAGWATCH_STORE_SPOOL_DIR"]])
    assert spools == {"spool-1", "spool-2"}, "each replica spools to its own volume"
    # feedback needs the token; both replicas sign and check ids with the same secret
    for name in PREDICTORS:
        env = services[name]["environment"]
        assert env["TAGWATCH_FEEDBACK_TOKEN_FILE"] == "/run/secrets/feedback_token"
        assert env["TAGWATCH_ID_SECRET_FILE"] == "/run/secrets/id_secret"
        assert "TAGWATCH_FEEDBACK_AUTH" not in env  # token mode, the default
        assert {"feedback_token", "id_secret"} <= {s["source"] for s in services[name]["secrets"]}
    replay = services["replay"]  # the demo's traffic (profile "demo"), with the token
    assert replay["profiles"] == ["demo"]
    assert replay["environment"]["TAGWATCH_FEEDBACK_TOKEN_FILE"] == "/run/secrets/feedback_token"
    assert [s["source"] for s in replay["secrets"]] == ["feedback_token"]
    # every reader of the store reads the same PostgreSQL, with the password secret
    for name in ("drift", "weekly", "lifecycle"):
        env = services[name]["environment"]
        assert env["TAGWATCH_STORE_URL"].startswith("postgresql://tagwatch@postgres:5432/")
        assert "postgres_password" in [s["source"] for s in services[name]["secrets"]]
    # the container entrypoint turns the secret file into libpq's private pgpass file
    entrypoint = (REPO / "scripts/docker-entrypoint.sh").read_text()
    assert "TAGWATCH_STORE_PASSWORD_FILE" in entrypoint and "PGPASSFILE" in entrypoint
    # the local stack (make up) keeps SQLite
    stack_env = (REPO / "scripts/stack-env.sh").read_text()
    assert "TAGWATCH_STORE_URL:-sqlite:///$STACK_VAR/tagwatch.sqlite3" in stack_env


def test_docker_prometheus_config_matches_the_local_one() -> None:
    local = yaml.safe_load((REPO / "prometheus/prometheus.yml").read_text())
    docker = yaml.safe_load((REPO / "prometheus/prometheus.docker.yml").read_text())
    assert docker["global"] == local["global"]
    assert docker["rule_files"] == local["rule_files"]
    local_jobs = {j["job_name"]: j for j in local["scrape_configs"]}
    docker_jobs = {j["job_name"]: j for j in docker["scrape_configs"]}
    assert set(docker_jobs) == set(local_jobs)
    for name, job in docker_jobs.items():
        targets = job["static_configs"][0]["targets"]
        # the predictor job scrapes both replicas (compose services predictor, predictor-2)
        hosts = list(PREDICTORS) if name == "predictor" else [name]
        assert [t.split(":")[0] for t in targets] == (
            ["127.0.0.1"] if name == "prometheus" else hosts
        )
        port = local_jobs[name]["static_configs"][0]["targets"][0].split(":")[1]
        assert all(t.split(":")[1] == port for t in targets)
    assert docker["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    check_prometheus_config(REPO / "prometheus/prometheus.docker.yml")


def test_dockerfile_is_slim_non_root_and_holds_no_data() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and not users[-1].startswith(("0", "root"))
    copies = re.findall(r"^COPY (.+)$", text, re.M)
    assert copies and not any(".." in c or "data" in c or "models" in c for c in copies)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*"  # a whitelist
    entrypoint = (REPO / "scripts/docker-entrypoint.sh").read_text()
    assert "python -m tagger.train" in entrypoint


def test_procfile_runs_the_local_stack() -> None:
    entries = dict(
        line.split(": ", 1)
        for line in (REPO / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    )
    # one Procfile process per service of scripts/services.conf (the one list of the stack)
    services = {
        line.split()[0]
        for line in (REPO / "scripts" / "services.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert set(entries) == services
    assert {"predictor", "drift", "weekly", "lifecycle", "mlflow", "mailsink"} <= services
    assert "python -m lifecycle serve" in entries["lifecycle"]
    mlflow_db = "sqlite:///$STACK_VAR/mlflow/mlflow.db"
    assert f"mlflow server --backend-store-uri {mlflow_db}" in entries["mlflow"]
    assert "--host 127.0.0.1 --port $STACK_PORT_MLFLOW" in entries["mlflow"]
    assert "python -m exporter serve" in entries["predictor"]
    assert "python -m drift" in entries["drift"]
    assert "python -m alerting serve" in entries["weekly"]
    assert "--cluster.listen-address= " in entries["alertmanager"]
    assert "python -m alerting.mailsink --dir $STACK_VAR/mail" in entries["mailsink"]
    # only the predictors may see PROMETHEUS_MULTIPROC_DIR (others would write into it), each
    # replica its own, and its own spool directory (the first one's comes from stack-env.sh)
    multiproc = {n: cmd for n, cmd in entries.items() if "PROMETHEUS_MULTIPROC_DIR" in cmd}
    assert set(multiproc) == {"predictor", "predictor2"}
    assert "PROMETHEUS_MULTIPROC_DIR=$STACK_VAR/prometheus-multiproc2 " in entries["predictor2"]
    assert "TAGWATCH_STORE_SPOOL_DIR=$STACK_VAR/spool/predictor2 " in entries["predictor2"]
    assert "TAGWATCH_PORT=$STACK_PORT_PREDICTOR2 " in entries["predictor2"]
    assert entries["postgres"] == "exec bash scripts/postgres.sh run"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "honcho"), "check"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_stack_demo_keeps_rules_and_shortens_demo_alerts(tmp_path: Path) -> None:
    run_stack_module("stack.demo", "--output", str(tmp_path))
    original = {
        r.get("alert") or r["record"]: r
        for f in sorted((REPO / "prometheus/rules").glob("*.yml"))
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
    }
    demo = {
        r.get("alert") or r["record"]: r
        for f in sorted((tmp_path / "rules").glob("*.yml"))
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
    }
    assert demo.keys() == original.keys()
    assert all(demo[k]["expr"] == original[k]["expr"] for k in demo)
    assert demo["JaccardLow"]["for"] == "1m" and original["JaccardLow"]["for"] != "1m"
    assert demo["PredictorDown"]["for"] == original["PredictorDown"]["for"]
    check_prometheus_config(tmp_path / "prometheus.yml")


def test_ci_workflow_is_valid_and_deploys_only_after_success_on_main() -> None:
    workflow = REPO / ".github/workflows/ci.yml"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
         "vendor.github-workflows", str(workflow)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    assert set(jobs["deploy"]["needs"]) == {"lint", "test", "image"}
    assert "refs/heads/main" in jobs["deploy"]["if"]
    assert jobs["deploy"]["permissions"]["packages"] == "write"
    steps = " ".join(str(s.get("run", "")) for job in jobs.values() for s in job["steps"])
    for check in ("ruff check", "ruff format --check", "promtool check", "amtool check-config",
                  "compose -f docker-compose.yml config", "make test"):  # fmt: skip
        assert check in steps, check


def _published(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (p.get("host_ip", "0.0.0.0"), str(p["published"]))
        if isinstance(p, dict)
        else (p.rsplit(":", 2)[0] if p.count(":") == 2 else "0.0.0.0", p.split(":")[-2])
        for p in service.get("ports", [])
    ]


def test_every_port_is_on_loopback_unless_told_otherwise(compose: dict[str, Any]) -> None:
    published = {n: _published(s) for n, s in compose["services"].items() if s.get("ports")}
    wanted = {"predictor", "predictor-2", "postgres", "drift", "grafana", "mailpit", "prometheus"}
    assert set(published) >= wanted
    for name, ports in published.items():
        assert all(host == "127.0.0.1" for host, _ in ports), (name, ports)
    proc = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TAGWATCH_BIND": "0.0.0.0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    opened = yaml.safe_load(proc.stdout)["services"]
    assert _published(opened["predictor"])[0][0] == "0.0.0.0"
    assert _published(opened["mailpit"])[0][0] == "127.0.0.1", "the inbox stays local"
    assert _published(opened["postgres"])[0][0] == "127.0.0.1", "the database stays local"


def test_no_default_passwords_and_credentials_from_secret_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana = services["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert services["mailpit"]["environment"]["MP_UI_AUTH_FILE"] == "/run/secrets/mailpit_ui_auth"
    predictor = services["predictor"]["environment"]
    assert predictor["TAGWATCH_API_TOKEN_FILE"] == "/run/secrets/api_token"
    assert predictor["TAGWATCH_LINK_SECRET_FILE"] == "/run/secrets/link_secret"
    assert services["weekly"]["environment"]["TAGWATCH_LINK_SECRET_FILE"] == (
        "/run/secrets/link_secret"
    )
    text = (REPO / "docker-compose.yml").read_text()
    assert ":-admin}" not in text and "changeme" not in text.lower()


def test_make_secrets_writes_random_values_once(tmp_path: Path) -> None:
    for _ in range(2):
        subprocess.run(
            ["bash", str(REPO / "scripts" / "make-secrets.sh"), str(tmp_path)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    first = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert {"api_token", "link_secret", "grafana_admin_password", "mailpit_ui_auth"} <= set(first)
    assert len(first["api_token"].strip()) >= 32
    assert first["api_token"] != first["link_secret"]
    assert first["mailpit_ui_auth"].startswith("tagwatch:{SHA}")
    other = tmp_path / "other"
    subprocess.run(["bash", str(REPO / "scripts" / "make-secrets.sh"), str(other)], check=True,
                   capture_output=True, timeout=30)  # fmt: skip
    assert (other / "api_token").read_text() != first["api_token"], "never a fixed default"


QUIET_MLFLOW = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def test_mlflow_sends_nothing_and_runs_no_job_consumers(compose: dict[str, Any]) -> None:
    """MLflow's usage telemetry is off and `mlflow server` starts no GenAI job runner (issue 18:
    its huey consumers held ~2 GB and both cores) in both stacks, unless the caller says
    otherwise."""
    users = {
        name: service.get("environment", {})
        for name, service in compose["services"].items()
        if "TAGWATCH_MLFLOW_TRACKING_URI" in service.get("environment", {})
    }  # every service that talks to MLflow, the UI included
    assert {"mlflow", "lifecycle", "predictor", "predictor-2"} <= set(users)
    for name, env in users.items():
        assert {k: env.get(k) for k in QUIET_MLFLOW} == QUIET_MLFLOW, name
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    printed = subprocess.run(
        ["bash", "-c", "source scripts/stack-env.sh && env"],
        cwd=REPO, capture_output=True, text=True, timeout=30, env=clean,
    ).stdout  # fmt: skip
    exported = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
    assert {k: exported.get(k) for k in QUIET_MLFLOW} == QUIET_MLFLOW
