"""A demo-mode local stack fed with real replayed questions, and a headless Chromium.

The stack is ``scripts/up.sh`` on free ports (demo mode: 1-minute drift bins; the drift job
runs every 5 s, Prometheus evaluates every second, the demo alerts' ``for:`` is 2 s and
Alertmanager's group waits are shortened after start). Real questions go through the predictor
with ``python -m exporter.replay``: 250 from late 2011 (the model's period), then 250 from 2019.
The replay runs within one wall-clock minute; the test then dates the 2011 questions two and
three minutes back and the 2019 ones one minute back, so that they fill three complete
1-minute bins (2011, 2011, 2019) before the drift job reads them.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tagger.settings import TagwatchSettings

from .stack import LocalStack, free_ports, load_services, make_stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EARLY, LATE = 250, 250


@dataclass
class Demo:
    stack: LocalStack
    waiting_page: str  # latest.html before the first drift run
    report_url: str
    mails: list[EmailMessage] = field(default_factory=list)
    weekly_html: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _mails(folder: Path) -> list[EmailMessage]:
    out = []
    for f in sorted(folder.glob("*.eml")):
        msg = message_from_bytes(f.read_bytes(), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def _shorten_alertmanager_waits(stack: LocalStack) -> None:
    """Group waits of 1 s (the routing tree, receivers and templates stay as rendered)."""
    path = stack.var / "alertmanager" / "alertmanager.yml"
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    for route in [config["route"], *config["route"].get("routes", [])]:
        if "group_wait" in route:
            route.update(group_wait="1s", group_interval="2s")
    path.write_text(yaml.safe_dump(config, sort_keys=False, width=10_000))
    r = requests.post(stack.url("alertmanager", "/-/reload"), timeout=10)
    assert r.status_code == 200, r.text


def _replay(stack: LocalStack, *args: str) -> None:
    # with the feedback token make up wrote: /feedback needs it, and it exempts the replay (one
    # address, 200 requests a second) from the predictor's per-address rate limit
    token = stack.var / "secrets" / "feedback_token"
    proc = stack.python(
        "-m", "exporter.replay", "--url", stack.url("predictor"), "--speed", "0",
        "--rate", "200", "--feedback-delay", "0.2", "--quiet",
        "--feedback-token-file", str(token), *args,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
    tagwatch_settings: TagwatchSettings,
) -> Iterator[Demo]:
    if not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")):
        pytest.skip("prometheus / prometheus-alertmanager not installed")
    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("browser-stack")
    services = load_services()
    models = tmp / "models"  # a copy: make up registers it in the stack's own MLflow
    shutil.copytree(models_dir, models)
    stack = make_stack(
        tmp,
        models,
        free_ports([s.name for s in services]),
        {
            "TAGWATCH_DATA_DIR": str(tagwatch_settings.data_dir),
            "TAGWATCH_DEMO": "1",
            "STACK_DEMO_MAX_FOR": "2s",
            "STACK_PROMETHEUS_INTERVAL": "1s",
            "TAGWATCH_CRON": "*/5 * * * * *",
            "TAGWATCH_RUN_ON_START": "false",
            # DriftExplained joins the drift alerts' group within a second (group waits of 1 s)
            "TAGWATCH_EXPLAIN_INTERVAL_SECONDS": "1",
        },
    )
    up = stack.script("up.sh")
    assert up.returncode == 0, up.stdout + up.stderr + stack.log_tail()
    try:
        timings = {"up": time.monotonic() - t0}
        report_url = stack.url("drift", "/reports/latest.html")
        waiting = requests.get(report_url, timeout=5)
        assert waiting.status_code == 200, "latest.html must exist from the first start"
        _shorten_alertmanager_waits(stack)

        # the replay must not cross a minute boundary (the drift job would read a part early)
        if time.gmtime().tm_sec > 40:  # the replay takes ~12 s
            time.sleep(61 - time.gmtime().tm_sec)
        _replay(stack, "--since", "2011-10-01", "--until", "2012-01-01", "--limit", str(EARLY))
        _replay(stack, "--since", "2019-01-01", "--every", "4", "--limit", str(LATE))
        with sqlite3.connect(stack.var / "tagwatch.sqlite3", timeout=30) as db:
            seqs = [r[0] for r in db.execute("SELECT seq FROM predictions ORDER BY seq")]
            assert len(seqs) == EARLY + LATE
            half, early = seqs[EARLY // 2], seqs[EARLY]
            db.execute(
                "UPDATE predictions SET created_at = created_at - 180 WHERE seq < ?", (half,)
            )
            db.execute(
                "UPDATE predictions SET created_at = created_at - 120 WHERE seq >= ? AND seq < ?",
                (half, early),
            )
            db.execute(
                "UPDATE predictions SET created_at = created_at - 60 WHERE seq >= ?", (early,)
            )
        assert time.gmtime().tm_sec < 58, "replay crossed a minute boundary: too slow a machine"
        timings["replayed"] = time.monotonic() - t0

        deadline = time.monotonic() + 60
        while "tagwatch-summary" not in requests.get(report_url, timeout=5).text:
            assert time.monotonic() < deadline, "no drift report after 60 s\n" + stack.log_tail()
            time.sleep(1)
        timings["report"] = time.monotonic() - t0
        mail_dir = stack.var / "mail"
        deadline = time.monotonic() + 60
        while not any("DataDriftDetected" in str(m["Subject"]) for m in _mails(mail_dir)):
            assert time.monotonic() < deadline, "no DataDriftDetected email\n" + stack.log_tail()
            time.sleep(1)
        # the words behind it (posted by the drift process beside the alert: drift/notify.py)
        while not any("DriftExplained" in str(m["Subject"]) for m in _mails(mail_dir)):
            assert time.monotonic() < deadline, "no DriftExplained email\n" + stack.log_tail()
            time.sleep(1)
        time.sleep(3)  # the other alerts of the same evaluation
        timings["alert_email"] = time.monotonic() - t0

        weekly = stack.exec("python", "-m", "alerting", "run-once")
        assert weekly.returncode == 0, weekly.stdout + weekly.stderr
        weekly_files = sorted((tmp / "reports" / "weekly").glob("*.html"))
        assert weekly_files, weekly.stderr
        timings["weekly"] = time.monotonic() - t0
        yield Demo(
            stack=stack,
            waiting_page=waiting.text,
            report_url=report_url,
            mails=_mails(mail_dir),
            weekly_html=weekly_files[-1],
            timings=timings,
        )
    finally:
        down = stack.script("down.sh", timeout=90)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
