"""Render Alertmanager's configuration from :class:`AlertingSettings`.

The routing tree is fixed here (it is part of the design, see docs/alerting.md); only the SMTP
server, sender, recipients and the links shown in emails come from settings. The password is
never written into the file: Alertmanager reads it from ``auth_password_file``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from alerting.settings import AlertingSettings

# With every replica of the predictor down (PredictorFleetDown: the only one, or all of a fleet)
# these mean nothing for the same job: silence them while it fires. Not PredictorDown, which
# fires per replica: one replica down of several must not silence the fleet's quality alerts.
INHIBITED_BY_PREDICTOR_DOWN = (
    "PredictorHighErrorRate",
    "PredictorLatencySLOBurnFast",
    "PredictorLatencySLOBurnSlow",
    "TagCoverageLow",
    "JaccardLow",
    "TagQualityLow",
    "EmptyPredictionRateHigh",
    "InputOOVRatioHigh",
    "ConceptDriftSuspected",
    "DashboardMetricAbsent",
)

# A general decay fails many tags at once: the pooled alert (JaccardLow) says it in one email,
# so it silences the per-tag alerts of the same job and their explanations (drift process).
# One tag collapsing alone leaves JaccardLow silent and its TagQualityLow speaks.
INHIBITED_BY_JACCARD_LOW = ("TagQualityLow", "TagQualityExplained")

HEADER = (
    "# Alertmanager configuration of tagwatch, rendered by `python -m alerting render-config`\n"
    "# from TAGWATCH_* settings (alerting/amconfig.py). Edit the settings, not this file.\n"
)


def _go_string(value: str) -> str:
    """A Go template string literal (JSON escaping is valid Go escaping for these values)."""
    return json.dumps(value)


def _links_prefix(settings: AlertingSettings) -> str:
    """Template definitions of the links, prepended to each email field.

    Grafana and Alertmanager links exist only where those have a web UI (an empty URL setting:
    no link; the local stack has no Grafana and Debian's Alertmanager has no UI).
    """
    grafana = settings.grafana_url or ""
    alertmanager = settings.alertmanager_url or ""
    dashboard = '{{ template "tagwatch.dashboard" . }}'
    links = {
        "tagwatch.grafana_url": _go_value(grafana),
        "tagwatch.drift_report_url": _go_value(settings.drift_report_url),
        "tagwatch.runbook_base_url": _go_value(settings.runbook_base_url),
        "tagwatch.dashboard_html": (
            f' · <a href="{dashboard}">Grafana dashboard</a>' if grafana else ""
        ),
        "tagwatch.dashboard_text": f"Dashboard: {dashboard}\n" if grafana else "",
        "tagwatch.alertmanager_html": (
            f' · <a href="{_go_value(alertmanager)}">Alertmanager</a>' if alertmanager else ""
        ),
        "tagwatch.alertmanager_text": (
            f"Alertmanager: {_go_value(alertmanager)}\n" if alertmanager else ""
        ),
    }
    return "".join(f'{{{{ define "{name}" }}}}{body}{{{{ end }}}}' for name, body in links.items())


def _go_value(url: str) -> str:
    return f"{{{{ {_go_string(url)} }}}}"


def _email(settings: AlertingSettings) -> dict[str, Any]:
    prefix = _links_prefix(settings)
    return {
        "to": ", ".join(settings.alert_recipients),
        "send_resolved": True,
        "headers": {"Subject": prefix + '{{ template "tagwatch.email.subject" . }}'},
        "html": prefix + '{{ template "tagwatch.email.html" . }}',
        "text": prefix + '{{ template "tagwatch.email.text" . }}',
    }


def build_config(settings: AlertingSettings) -> dict[str, Any]:
    """The Alertmanager configuration as a dict (YAML-ready)."""
    return {
        "global": _smtp_global(settings),
        "templates": [settings.alertmanager_templates],
        "route": _route(settings),
        "inhibit_rules": _inhibit_rules(),
        "receivers": _receivers(settings),
    }


def _smtp_global(settings: AlertingSettings) -> dict[str, Any]:
    """SMTP settings; the password only as a file path, never its value."""
    glob: dict[str, Any] = {
        "smtp_smarthost": f"{settings.smtp_host}:{settings.smtp_port}",
        "smtp_from": settings.smtp_from,
        "smtp_require_tls": settings.smtp_require_tls,
    }
    if settings.smtp_username:
        glob["smtp_auth_username"] = settings.smtp_username
    if settings.smtp_password_file is not None:
        glob["smtp_auth_password_file"] = str(settings.smtp_password_file)
    return glob


def _route(settings: AlertingSettings) -> dict[str, Any]:
    """The fixed routing tree: lifecycle webhook first (it continues), then by severity."""
    return {
        "receiver": "email-warning",
        "group_by": ["alertname", "job"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
        "routes": [*_lifecycle_routes(settings), *_severity_routes()],
    }


def _severity_routes() -> list[dict[str, Any]]:
    """Pages at once and often, warnings grouped per job, info only in the weekly summary."""
    return [
        {
            # pages: one email per alert and instance, at once, repeated every 3 h
            "matchers": ['severity="critical"'],
            "receiver": "email-critical",
            "group_by": ["alertname", "job", "instance"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "3h",
        },
        {
            # warnings: one email per job gathering its alerts, at most every 10 min
            "matchers": ['severity="warning"'],
            "receiver": "email-warning",
            "group_by": ["job"],
            "group_wait": "1m",
            "group_interval": "10m",
            "repeat_interval": "12h",
        },
        {
            # info: no email, the weekly summary lists them
            "matchers": ['severity="info"'],
            "receiver": "null",
        },
    ]


def _inhibit_rules() -> list[dict[str, Any]]:
    """Alerts that say nothing new while a more fundamental one fires for the same job."""
    return [
        {
            "source_matchers": ['alertname="PredictorFleetDown"'],
            "target_matchers": ['alertname=~"' + "|".join(INHIBITED_BY_PREDICTOR_DOWN) + '"'],
            "equal": ["job"],
        },
        {
            # the fast-burn page already says it
            "source_matchers": ['alertname="PredictorLatencySLOBurnFast"'],
            "target_matchers": ['alertname="PredictorLatencySLOBurnSlow"'],
            "equal": ["job"],
        },
        {
            "source_matchers": ['alertname="JaccardLow"'],
            "target_matchers": ['alertname=~"' + "|".join(INHIBITED_BY_JACCARD_LOW) + '"'],
            "equal": ["job"],
        },
    ]


def _receivers(settings: AlertingSettings) -> list[dict[str, Any]]:
    """Email for pages and warnings, a null sink for info, the lifecycle webhook if set."""
    return [
        {"name": "email-critical", "email_configs": [_email(settings)]},
        {"name": "email-warning", "email_configs": [_email(settings)]},
        {"name": "null"},
        *_lifecycle_receivers(settings),
    ]


def _lifecycle_routes(settings: AlertingSettings) -> list[dict[str, Any]]:
    """Drift and quality alerts also go to the lifecycle service (a retrain), then on to email.

    ``continue``: the email routes below still get them. The service debounces and checks that
    enough new feedback exists; Alertmanager only repeats the notification hourly.
    """
    if not settings.lifecycle_webhook_url or not settings.lifecycle_webhook_alerts:
        return []
    names = "|".join(settings.lifecycle_webhook_alerts)
    return [
        {
            "matchers": [f'alertname=~"{names}"'],
            "receiver": "lifecycle",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "1h",
            "continue": True,
        }
    ]


def _lifecycle_receivers(settings: AlertingSettings) -> list[dict[str, Any]]:
    """The lifecycle webhook, with the bearer token's file when set (the service answers 401
    without it): Alertmanager reads the file, the token never lands in this config."""
    if not settings.lifecycle_webhook_url:
        return []
    hook: dict[str, Any] = {
        "url": settings.lifecycle_webhook_url,
        "send_resolved": False,
        "max_alerts": 0,
    }
    if settings.lifecycle_token_file is not None:
        hook["http_config"] = {
            "authorization": {
                "type": "Bearer",
                "credentials_file": str(settings.lifecycle_token_file),
            }
        }
    return [{"name": "lifecycle", "webhook_configs": [hook]}]


def render_config(settings: AlertingSettings) -> str:
    """The Alertmanager configuration file's text."""
    body = yaml.safe_dump(build_config(settings), sort_keys=False, width=10_000, allow_unicode=True)
    return HEADER + body
