"""Settings of the alerting side: SMTP, recipients, links, Prometheus, the weekly schedule.

One object is built by the entry point (``python -m alerting``) and passed down; it renders the
Alertmanager configuration (:mod:`alerting.amconfig`) and drives the weekly summary.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from drift.settings import TagQualitySettings

_OPTIONAL_LINKS = ("grafana_url", "alertmanager_url", "lifecycle_webhook_url")
_URL = re.compile(r"^https?://[^\s\"'{}<>]+$")


class AlertingSettings(TagQualitySettings):
    """The alerting side's settings; TagQualitySettings: when the weekly summary judges a
    tag (TAGWATCH_TAG_MIN_SUPPORT, TAGWATCH_TAG_YELLOW_SHARE, TAGWATCH_TAG_RED_SHARE)."""

    # SMTP (Alertmanager and the weekly email use the same server and sender)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_from: str = "tagwatch@localhost"
    smtp_username: str | None = None
    # the password is only ever read from a file (a compose/k8s secret), never from the env
    smtp_password_file: Path | None = None
    # STARTTLS required (Alertmanager's smtp_require_tls); port 465 means implicit TLS
    smtp_require_tls: bool = False
    # extra CA bundle to verify the SMTP server's certificate (a private CA)
    smtp_tls_ca_file: Path | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_attempts: int = Field(default=4, ge=1)
    smtp_backoff_seconds: float = Field(default=2.0, ge=0)
    # recipients: comma-separated addresses
    alert_email_to: str = "oncall@localhost"
    weekly_email_to: str | None = None

    # links shown in emails; an empty Grafana/Alertmanager URL: no such link (the local stack
    # has no Grafana, and Debian's Alertmanager has no web UI)
    grafana_url: str | None = "http://127.0.0.1:3000"
    drift_report_url: str = "http://127.0.0.1:8001/reports/latest.html"
    # "What changed this week": at most this many of the week's questions read (an even sample)
    weekly_text_max_titles: int = 5000
    # the drift process serves the runbook rendered at <base>/docs/runbook.md#<alert>
    runbook_base_url: str = "http://127.0.0.1:8001"
    predictor_url: str = "http://127.0.0.1:8000"
    # links to stored questions in the weekly email are signed with the secret the predictor
    # checks (exporter/signing.py) and expire after link_ttl_days
    link_secret_file: Path | None = None
    link_ttl_days: float = Field(default=14, gt=0, le=366)
    alertmanager_url: str | None = "http://127.0.0.1:9093"

    # Alertmanager config rendering: template files, relative to the rendered config's folder
    alertmanager_templates: str = "templates/*.tmpl"

    # weekly summary
    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_timeout_seconds: float = Field(default=15.0, gt=0)
    store_url: str = "sqlite:///var/tagwatch.sqlite3"
    reports_dir: Path = Path("reports/weekly")
    weekly_cron: str = "0 8 * * mon"
    weekly_days: int = Field(default=7, ge=1, le=31)
    weekly_problematic_limit: int = Field(default=10, ge=1, le=100)
    weekly_host: str = "127.0.0.1"
    weekly_port: int = Field(default=8002, ge=0, le=65535)
    log_level: str = "INFO"
    # the lifecycle service's Alertmanager webhook (drift / quality alerts trigger a retrain);
    # empty: no such receiver
    lifecycle_webhook_url: str | None = "http://127.0.0.1:8003/webhook"
    lifecycle_webhook_alerts: tuple[str, ...] = ("DataDriftDetected", "JaccardLow")
    # the bearer token the lifecycle service requires on its webhook: the path of the file that
    # holds it, as Alertmanager sees it (compose: /run/secrets/lifecycle_token). Alertmanager
    # reads it at each notification (http_config.authorization.credentials_file); the token is
    # never written into the rendered config. The same variable the lifecycle service reads.
    lifecycle_token_file: Path | None = None

    @field_validator(
        "lifecycle_webhook_url",
        "grafana_url",
        "drift_report_url",
        "runbook_base_url",
        "predictor_url",
        "alertmanager_url",
        "prometheus_url",
    )
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            if info.field_name in _OPTIONAL_LINKS:
                return None
            raise ValueError("an http(s) URL is required")
        if not _URL.match(value):
            raise ValueError(f"not an http(s) URL without quotes, braces or spaces: {value!r}")
        return value.rstrip("/")

    @field_validator("smtp_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value or any(c in value for c in "\"'{}\n,"):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("alert_email_to", "weekly_email_to")
    @classmethod
    def _addresses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        addresses = [a.strip() for a in value.split(",") if a.strip()]
        if not addresses:
            raise ValueError("at least one recipient address is needed")
        for a in addresses:
            if "@" not in a or any(c in a for c in "\"'{}\n "):
                raise ValueError(f"not an email address: {a!r}")
        return ",".join(addresses)

    @property
    def alert_recipients(self) -> list[str]:
        return self.alert_email_to.split(",")

    @property
    def weekly_recipients(self) -> list[str]:
        return (self.weekly_email_to or self.alert_email_to).split(",")

    def smtp_password(self) -> str | None:
        """The SMTP password read from ``smtp_password_file`` (trailing newline dropped)."""
        if self.smtp_password_file is None:
            return None
        try:
            return self.smtp_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(
                f"TAGWATCH_SMTP_PASSWORD_FILE: cannot read {self.smtp_password_file} ({exc})"
            ) from exc
