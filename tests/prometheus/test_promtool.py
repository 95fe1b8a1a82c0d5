"""The monitoring configuration through the real tools: promtool (rule unit tests, rule and
config checks) and amtool (Alertmanager config check, routing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO_ROOT / "prometheus"
AM_CONFIG = REPO_ROOT / "alertmanager" / "alertmanager.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(str(argv[0])) is None:
        pytest.fail(f"{argv[0]} not installed (apt-get install prometheus prometheus-alertmanager)")
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


def test_rule_unit_tests_cover_every_alert() -> None:
    import yaml

    alerts = {
        r["alert"]
        for g in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    records = {
        r["record"]
        for g in yaml.safe_load((PROMETHEUS / "rules" / "recording.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tested_alerts: set[str] = set()
    tested_exprs = ""
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                if t["exp_alerts"]:  # fired: the after side of `for:`
                    tested_alerts.add(t["alertname"])
            tested_exprs += " ".join(t["expr"] for t in case.get("promql_expr_test", []))
    assert alerts - tested_alerts == set(), "alerts never seen firing in prometheus/tests"
    assert {r for r in records if r not in tested_exprs} == set(), "untested recording rules"


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(path: Path) -> None:
    result = run("promtool", "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules_and_config() -> None:
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    result = run("promtool", "check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run("promtool", "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_amtool_check_config() -> None:
    result = run("amtool", "check-config", AM_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=PredictorDown", "severity=critical", "job=predictor"], "email-critical"),
        (["alertname=PredictorLatencySLOBurnFast", "severity=critical"], "email-critical"),
        # drift and quality alerts also trigger a retrain (lifecycle webhook), then email
        (
            ["alertname=DataDriftDetected", "severity=warning", "job=drift"],
            "lifecycle,email-warning",
        ),
        (["alertname=JaccardLow", "severity=warning", "job=predictor"], "lifecycle,email-warning"),
        (["alertname=DriftJobFailing", "severity=warning", "job=drift"], "email-warning"),
        (["alertname=Something", "severity=info"], "null"),
        (["alertname=NoSeverity"], "email-warning"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    result = run(
        "amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}",
        f"--verify.receivers={receiver}", *labels,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_runbook_url_has_a_runbook_section() -> None:
    import re

    import yaml

    runbook = (REPO_ROOT / "docs" / "runbook.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\S+)\s*$", runbook, re.M)}
    rules = [
        r
        for g in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description", "runbook_url", "dashboard"} <= set(rule["annotations"])
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/runbook.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no '## ' section for #{anchor}"
