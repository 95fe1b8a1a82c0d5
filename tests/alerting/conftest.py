"""Helpers of the alerting tests: an SMTP sink, real processes, and test configurations
derived from the production ones (short intervals, free ports, the same rules files)."""

from __future__ import annotations

import email
import email.policy
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from alerting.amconfig import build_config
from alerting.settings import AlertingSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
ALERTMANAGER_DIR = REPO_ROOT / "alertmanager"


# ------------------------------------------------------------------ derived configurations


def derive_prometheus_config(
    targets: dict[str, str],
    alertmanager: str,
    interval: str = "1s",
    production: Path = PROMETHEUS_DIR / "prometheus.yml",
) -> dict[str, Any]:
    """The production Prometheus config with short intervals and test targets.

    Jobs missing from ``targets`` are dropped; rule files point at the repository's files.
    """
    cfg = yaml.safe_load(production.read_text())
    cfg["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    cfg["rule_files"] = [str(production.parent / p) for p in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = []
    for job in cfg["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    cfg["scrape_configs"] = jobs
    return cfg


def derive_rule_files(
    dest: Path, for_: str, production: Path = PROMETHEUS_DIR / "rules"
) -> list[str]:
    """Copies of the production rule files in ``dest`` with every ``for:`` set to ``for_``;
    expressions, labels and annotations untouched: an alert held for hours fires within a
    test's seconds, on the same rule. Their paths, for ``rule_files``."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sorted(production.glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = for_
        out = dest / src.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True))
        paths.append(str(out))
    return paths


def derive_alertmanager_config(
    settings: AlertingSettings, group_wait: str = "1s", group_interval: str = "2s"
) -> dict[str, Any]:
    """The rendered Alertmanager config with every route's timers shortened."""
    cfg = build_config(settings)
    for route in [cfg["route"], *cfg["route"]["routes"]]:
        if "group_wait" in route:
            route.update(group_wait=group_wait, group_interval=group_interval)
    return cfg


# ------------------------------------------------------------------ SMTP sink


@dataclass
class Mail:
    received_at: float
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part in {self.subject!r}"
        return str(body.get_content())


class SmtpSink:
    """aiosmtpd on 127.0.0.1 keeping every message with its arrival time."""

    def __init__(self, port: int, **controller_kwargs: Any) -> None:
        self.mails: list[Mail] = []
        self._cond = threading.Condition()
        self.controller = Controller(self, hostname="127.0.0.1", port=port, **controller_kwargs)
        self.port = port

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._cond:
            self.mails.append(Mail(time.time(), msg))
            self._cond.notify_all()
        return "250 OK"

    def wait_for(self, predicate: Callable[[Mail], bool], timeout: float) -> Mail:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for mail in self.mails:
                    if predicate(mail):
                        return mail
                left = deadline - time.monotonic()
                if left <= 0:
                    subjects = [m.subject for m in self.mails]
                    raise AssertionError(f"no matching email within {timeout} s; got {subjects}")
                self._cond.wait(left)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_sink(free_port: Callable[[], int]) -> Iterator[SmtpSink]:
    with SmtpSink(free_port()) as sink:
        yield sink


def require_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(f"binaries not installed: {', '.join(missing)} (apt-get install prometheus "
                    "prometheus-alertmanager)")  # fmt: skip
