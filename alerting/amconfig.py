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

# PredictorDown makes these meaningless for the same job: silence them while it fires.
INHIBITED_BY_PREDICTOR_DOWN = (
    "PredictorHighErrorRate",
    "PredictorLatencySLOBurnFast",
    "PredictorLatencySLOBurnSlow",
    "TagCoverageLow",
    "JaccardLow",
    "EmptyPredictionRateHigh",
    "InputOOVRatioHigh",
    "ConceptDriftSuspected",
    "DashboardMetricAbsent",
)

HEADER = (
    "# Alertmanager configuration of tagwatch, rendered by `python -m alerting render-config`\n"
    "# from TAGWATCH_* settings (alerting/amconfig.py). Edit the settings, not this file.\n"
)


def _go_string(value: str) -> str:
    """A Go template string literal (JSON escaping is valid Go escaping for these values)."""
    return json.dumps(value)


def _links_prefix(settings: AlertingSettings) -> str:
    """Template definitions of the links, prepended to each email field."""
    links = {
        "tagwatch.grafana_url": settings.grafana_url,
        "tagwatch.drift_report_url": settings.drift_report_url,
        "tagwatch.runbook_base_url": settings.runbook_base_url,
    }
    return "".join(
        f'{{{{ define "{name}" }}}}{{{{ {_go_string(url)} }}}}{{{{ end }}}}'
        for name, url in links.items()
    )


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
    glob: dict[str, Any] = {
        "smtp_smarthost": f"{settings.smtp_host}:{settings.smtp_port}",
        "smtp_from": settings.smtp_from,
        "smtp_require_tls": settings.smtp_require_tls,
    }
    if settings.smtp_username:
        glob["smtp_auth_username"] = settings.smtp_username
    if settings.smtp_password_file is not None:
        glob["smtp_auth_password_file"] = str(settings.smtp_password_file)
    return {
        "global": glob,
        "templates": [settings.alertmanager_templates],
        "route": {
            "receiver": "email-warning",
            "group_by": ["alertname", "job"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [
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
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="PredictorDown"'],
                "target_matchers": ['alertname=~"' + "|".join(INHIBITED_BY_PREDICTOR_DOWN) + '"'],
                "equal": ["job"],
            },
            {
                # the fast-burn page already says it
                "source_matchers": ['alertname="PredictorLatencySLOBurnFast"'],
                "target_matchers": ['alertname="PredictorLatencySLOBurnSlow"'],
                "equal": ["job"],
            },
        ],
        "receivers": [
            {"name": "email-critical", "email_configs": [_email(settings)]},
            {"name": "email-warning", "email_configs": [_email(settings)]},
            {"name": "null"},
        ],
    }


def render_config(settings: AlertingSettings) -> str:
    """The Alertmanager configuration file's text."""
    body = yaml.safe_dump(build_config(settings), sort_keys=False, width=10_000, allow_unicode=True)
    return HEADER + body
