"""``python -m drift``: the scheduled drift job with its HTTP server; ``run-once``: one run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from drift.metrics import DriftMetrics
from drift.settings import DriftSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("drift")


def configure_logging() -> None:
    # popmon logs every pipeline step on the root logger: keep the root at WARNING
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("drift").setLevel(logging.INFO)
    os.environ.setdefault("TQDM_DISABLE", "1")  # popmon's progress bars are not log lines


def store_missing(url: str) -> bool:
    """True when the store URL names an SQLite file that does not exist (yet)."""
    if url.startswith("sqlite:///"):
        url = url.removeprefix("sqlite:///")
    elif "://" in url:
        return False
    return not Path(url).exists()


def run_once_cli(settings: DriftSettings) -> int:
    from prometheus_client import CollectorRegistry

    from drift.job import run_once

    result = run_once(settings, DriftMetrics(CollectorRegistry()))
    if not result.ok:
        return 1
    return 0


def cron_trigger(expr: str) -> Any:
    """Five crontab fields (UTC); a sixth, leading field of seconds is allowed for demos/tests."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) == 6:
        names = ("second", "minute", "hour", "day", "month", "day_of_week")
        return CronTrigger(**dict(zip(names, fields, strict=True)), timezone=UTC)
    return CronTrigger.from_crontab(expr, timezone=UTC)


def serve(settings: DriftSettings) -> int:
    """Scheduler (cron from settings, one run at a time, coalesced) plus the HTTP server."""
    from drift.server import make_server, serve_in_thread

    try:
        trigger = cron_trigger(settings.cron)
    except ValueError as exc:
        log.error("TAGWATCH_CRON %r is not a cron expression: %s", settings.cron, exc)
        return 2
    registry, metrics = _registry_and_metrics()
    last: dict[str, Any] = {"ok": None, "finished_at": None}
    job = _drift_job(settings, metrics, last)

    def health() -> dict[str, Any]:
        return {"status": "ok", "last_run": last, "cron": settings.cron}

    try:
        server = make_server(settings.host, settings.port, registry, settings.reports_dir, health)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 2
    serve_in_thread(server)
    _ensure_waiting_page(settings, trigger)
    scheduler = _scheduler(settings, job, trigger, metrics)
    signal.signal(signal.SIGTERM, _interrupt)
    log.info(
        "drift scheduler started (cron %r, UTC); http://%s:%d/metrics, /reports/latest.html",
        settings.cron,
        settings.host,
        settings.port,
    )
    _run_until_stopped(scheduler, server)
    return 0


def _registry_and_metrics() -> tuple[CollectorRegistry, DriftMetrics]:
    """The registry /metrics shows: the drift metrics plus the process's own."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    # process_start_time_seconds & co.: DriftJobStale tells "never succeeded since start"
    ProcessCollector(registry=registry)
    return registry, DriftMetrics(registry)


def _drift_job(
    settings: DriftSettings, metrics: DriftMetrics, last: dict[str, Any]
) -> Callable[[], None]:
    """The scheduled run: one at a time, its outcome kept in ``last`` for /healthz."""
    from drift.job import run_once

    lock = threading.Lock()

    def job() -> None:
        if store_missing(settings.store_url):
            # a fresh install before the predictor's first start: nothing to judge, no failure
            log.warning(
                "no store at %s yet (the predictor creates it): run skipped", settings.store_url
            )
            return
        with lock:
            result = run_once(settings, metrics)
            last.update(ok=result.ok, finished_at=time.time(), error=result.error)

    return job


def _ensure_waiting_page(settings: DriftSettings, trigger: Any) -> None:
    """latest.html answers from the first start: what will be judged, and when."""
    from drift.job import ensure_latest

    first = (
        "now (TAGWATCH_RUN_ON_START)"
        if settings.run_on_start
        else f"{trigger.get_next_fire_time(None, datetime.now(UTC)):%Y-%m-%d %H:%M %Z}"
    )
    try:
        ensure_latest(settings, first)
    except OSError as exc:
        log.warning("cannot write %s/latest.html: %s", settings.reports_dir, exc)


def _scheduler(
    settings: DriftSettings, job: Callable[[], None], trigger: Any, metrics: DriftMetrics
) -> Any:
    """A blocking scheduler with the drift job: coalesced, never two at once."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(timezone=UTC)
    extra: dict[str, Any] = {}
    if settings.run_on_start:
        extra["next_run_time"] = datetime.now(UTC)
    scheduler.add_job(
        job,
        trigger,
        id="drift",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=settings.misfire_grace_seconds,
        **extra,
    )
    if settings.alertmanager_api_url:
        scheduler.add_job(
            _explainer(settings, metrics),
            "interval",
            seconds=settings.explain_interval_seconds,
            id="explain",
            max_instances=1,
            coalesce=True,
        )
    return scheduler


def _explainer(settings: DriftSettings, metrics: DriftMetrics) -> Callable[[], None]:
    """DriftExplained beside the active drift alerts and TagQualityExplained beside the active
    TagQualityLow (drift/notify.py); never raises."""
    import pandas as pd

    from drift.notify import explain_once

    explain_tags = _tag_explainer(settings)

    def explain() -> None:
        now = pd.Timestamp.now(tz="UTC")
        hold = pd.Timedelta(seconds=settings.explain_hold_seconds)
        posted, failed = 0, False
        try:
            posted += explain_once(
                settings.alertmanager_api_url,
                settings.reports_dir,
                settings.drift_report_url,
                now,
                hold,
            )
        except Exception as exc:
            log.warning(
                "DriftExplained: Alertmanager at %s: %s", settings.alertmanager_api_url, exc
            )
            failed = True
        try:
            posted += explain_tags(now, hold)
        except Exception as exc:
            log.warning("TagQualityExplained: %s", exc)
            failed = True
        metrics.alert_posts.labels("failed" if failed else "sent" if posted else "idle").inc()

    return explain


def _tag_explainer(settings: DriftSettings) -> Callable[[Any, Any], int]:
    """TagQualityExplained with a read-only store opened at its first use and kept (reopened
    after a failure): a check every 15 s must not open a connection each time."""
    from drift.notify import EvidenceCache, explain_tags_once, served_per_tag
    from store import PredictionStore, open_store

    held: list[PredictionStore] = []
    cache = EvidenceCache()

    def reader() -> PredictionStore:
        if not held:
            held.append(open_store(settings.store_url, readonly=True))
        return held[0]

    def explain(now: Any, hold: Any) -> int:
        try:
            return explain_tags_once(
                settings.alertmanager_api_url,
                reader,
                lambda: served_per_tag(settings.models_dir, settings.model_version),
                settings.drift_report_url,
                now,
                hold,
                cache=cache,
            )
        except Exception:
            while held:
                held.pop().close()
            raise

    return explain


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops the blocking scheduler the way Ctrl-C does."""
    raise KeyboardInterrupt


def _run_until_stopped(scheduler: Any, server: Any) -> None:
    """Block in the scheduler until a signal; then stop it and the HTTP server."""
    try:
        scheduler.start()
    except KeyboardInterrupt:
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        server.shutdown()
        log.info("drift scheduler stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drift", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "run-once"], help="default: serve"
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = DriftSettings()
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(x) for x in err["loc"])
            log.error("setting TAGWATCH_%s: %s", field.upper(), err["msg"])
        return 2
    if args.command == "run-once":
        return run_once_cli(settings)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
