"""Alertmanager configuration rendered from settings (checked by the real amtool)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from alerting.amconfig import build_config, render_config
from alerting.settings import AlertingSettings
from tests.processes import http_ok, start_process, wait_until

from .conftest import (
    ALERTMANAGER_DIR,
    REPO_ROOT,
    SmtpSink,
    derive_alertmanager_config,
    require_binaries,
)


def test_committed_config_is_the_rendered_defaults() -> None:
    committed = (ALERTMANAGER_DIR / "alertmanager.yml").read_text()
    assert committed == render_config(AlertingSettings.model_construct()), (
        "run: python -m alerting render-config --defaults > alertmanager/alertmanager.yml"
    )


def test_real_smtp_settings_render_tls_auth_and_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp_password"
    secret.write_text("s3cret-value\n")
    settings = AlertingSettings(
        smtp_host="smtp.example.org",
        smtp_port=587,
        smtp_from="tagwatch@example.org",
        smtp_username="tagwatch",
        smtp_password_file=secret,
        smtp_require_tls=True,
        alert_email_to="a@example.org, b@example.org",
        grafana_url="https://grafana.example.org/",
        alertmanager_templates=str(ALERTMANAGER_DIR / "templates" / "*.tmpl"),
    )
    text = render_config(settings)
    assert "s3cret-value" not in text  # the password never lands in the file
    cfg = yaml.safe_load(text)
    assert cfg["global"] == {
        "smtp_smarthost": "smtp.example.org:587",
        "smtp_from": "tagwatch@example.org",
        "smtp_require_tls": True,
        "smtp_auth_username": "tagwatch",
        "smtp_auth_password_file": str(secret),
    }
    email = cfg["receivers"][0]["email_configs"][0]
    assert email["to"] == "a@example.org, b@example.org"
    assert email["send_resolved"] is True
    assert '{{ "https://grafana.example.org" }}' in email["html"]  # trailing slash dropped
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    result = subprocess.run(
        ["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_routes_critical_fast_warnings_grouped_inhibition() -> None:
    route = build_config(AlertingSettings.model_construct())["route"]
    lifecycle, critical, warning, info = route["routes"]
    # drift / quality alerts trigger a retrain first, and still reach email (continue)
    assert lifecycle["receiver"] == "lifecycle" and lifecycle["continue"] is True
    assert lifecycle["matchers"] == ['alertname=~"DataDriftDetected|JaccardLow"']
    no_hook = AlertingSettings.model_construct(lifecycle_webhook_url=None)
    assert len(build_config(no_hook)["route"]["routes"]) == 3
    assert critical["matchers"] == ['severity="critical"']
    assert critical["group_wait"] == "10s" and critical["repeat_interval"] == "3h"
    assert warning["group_by"] == ["job"]  # one email per job gathers its warnings
    assert info["receiver"] == "null"
    inhibit = build_config(AlertingSettings.model_construct())["inhibit_rules"]
    assert inhibit[0]["source_matchers"] == ['alertname="PredictorFleetDown"']
    assert "JaccardLow" in inhibit[0]["target_matchers"][0] and inhibit[0]["equal"] == ["job"]
    assert "TagQualityLow" in inhibit[0]["target_matchers"][0]
    # a general decay: JaccardLow's email, not one per tag
    assert {
        "source_matchers": ['alertname="JaccardLow"'],
        "target_matchers": ['alertname=~"TagQualityLow|TagQualityExplained"'],
        "equal": ["job"],
    } in inhibit


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAGWATCH_GRAFANA_URL": "grafana:3000"}, "TAGWATCH_GRAFANA_URL"),
        ({"TAGWATCH_ALERT_EMAIL_TO": "not-an-address"}, "TAGWATCH_ALERT_EMAIL_TO"),
        ({"TAGWATCH_SMTP_PORT": "smtp"}, "TAGWATCH_SMTP_PORT"),
    ],
)
def test_cli_names_the_bad_setting(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alerting", "render-config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "am" / "alertmanager.yml"
    result = subprocess.run(
        [sys.executable, "-m", "alerting", "render-config", "--output", str(out)],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "TAGWATCH_SMTP_HOST": "mailpit",
            "TAGWATCH_SMTP_PORT": "1025",
        },
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(out.read_text())["global"]["smtp_smarthost"] == "mailpit:1025"


def test_lifecycle_receiver_sends_the_bearer_token_from_its_file(tmp_path: Path) -> None:
    """The lifecycle service answers 401 without its token: Alertmanager's webhook sends it,
    read from the file at each notification (never written into the config)."""
    token = tmp_path / "lifecycle_token"
    token.write_text("lifecycle-token-value-0123456789\n")
    out = tmp_path / "alertmanager.yml"
    result = subprocess.run(
        [sys.executable, "-m", "alerting", "render-config", "--output", str(out)],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "TAGWATCH_LIFECYCLE_TOKEN_FILE": str(token),
            "TAGWATCH_ALERTMANAGER_TEMPLATES": str(ALERTMANAGER_DIR / "templates" / "*.tmpl"),
        },
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "lifecycle-token-value" not in text
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    hook = receivers["lifecycle"]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:8003/webhook"
    assert hook["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": str(token)}
    }
    check = subprocess.run(
        ["amtool", "check-config", str(out)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # no token file: no authorization (the service then runs in its explicit open mode)
    plain = build_config(AlertingSettings.model_construct())
    hook = {r["name"]: r for r in plain["receivers"]}["lifecycle"]["webhook_configs"][0]
    assert "http_config" not in hook


def _post_alerts(url: str, job: str, names: list[tuple[str, dict[str, str]]]) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alerts = [
        {"labels": {"alertname": n, "job": job, "severity": "warning", **labels}, "startsAt": now}
        for n, labels in names
    ]
    assert requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=5).status_code == 200


def _states(url: str, job: str) -> dict[tuple[str, str], str]:
    """(alertname, tag) -> Alertmanager's state (active, suppressed) of a job's alerts."""
    got = requests.get(f"{url}/api/v2/alerts", params={"filter": f'job="{job}"'}, timeout=5)
    return {
        (a["labels"]["alertname"], a["labels"].get("tag", "")): a["status"]["state"]
        for a in got.json()
    }


@pytest.mark.slow
def test_jaccard_low_inhibits_tag_quality_and_tags_share_one_email(
    tmp_path: Path, free_port: Callable[[], int], smtp_sink: SmtpSink
) -> None:
    """The real Alertmanager with the rendered config: JaccardLow silences the TagQualityLow
    (and TagQualityExplained) of its job only; three tags failing alone make one email."""
    require_binaries("prometheus-alertmanager")
    settings = AlertingSettings(
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_require_tls=False,
        lifecycle_webhook_url=None,
        alertmanager_templates=str(ALERTMANAGER_DIR / "templates" / "*.tmpl"),
    )
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(yaml.safe_dump(derive_alertmanager_config(settings), width=10_000))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    am = start_process(
        "alertmanager",
        ["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        tmp_path,
    )  # fmt: skip
    try:
        wait_until(am, http_ok(f"{url}/-/ready"), "Alertmanager ready", 30)
        tags = ["javascript", "python", "c#"]
        per_tag = [("TagQualityLow", {"tag": t}) for t in tags]
        _post_alerts(
            url, "decay", [("JaccardLow", {}), *per_tag, ("TagQualityExplained", {"tag": "c#"})]
        )
        _post_alerts(url, "one-tag", per_tag)
        deadline = time.monotonic() + 10
        while _states(url, "decay").get(("TagQualityLow", "c#")) != "suppressed":
            assert time.monotonic() < deadline, _states(url, "decay")
            time.sleep(0.2)
        decay = _states(url, "decay")
        assert decay.pop(("JaccardLow", "")) == "active"
        assert set(decay.values()) == {"suppressed"}, decay
        assert set(_states(url, "one-tag").values()) == {"active"}
        mail = smtp_sink.wait_for(lambda m: "one-tag" in m.subject + m.part("plain"), 20)
        mail_decay = smtp_sink.wait_for(lambda m: "decay" in m.part("plain"), 20)
        time.sleep(3)  # group_interval 2 s: a second email of the group would be here by now
        one_tag = [m for m in smtp_sink.mails if "job=one-tag" in m.part("plain")]
        assert one_tag == [mail], [m.subject for m in one_tag]
        assert mail.subject.startswith("[FIRING:3] WARNING TagQualityLow"), mail.subject
        for tag in tags:
            assert f"tag={tag}" in mail.part("plain")
        assert "TagQualityLow" not in mail_decay.part("plain"), mail_decay.part("plain")
    finally:
        am.stop()
