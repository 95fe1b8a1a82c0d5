"""``python -m drift``: the scheduled drift job with its HTTP server; ``run-once``: one run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from drift.metrics import DriftMetrics
from drift.settings import DriftSettings

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
    from apscheduler.schedulers.blocking import BlockingScheduler
    from prometheus_client import CollectorRegistry, ProcessCollector

    from drift.job import run_once
    from drift.server import make_server, serve_in_thread

    try:
        trigger = cron_trigger(settings.cron)
    except ValueError as exc:
        log.error("TAGWATCH_CRON %r is not a cron expression: %s", settings.cron, exc)
        return 2
    registry = CollectorRegistry()
    # process_start_time_seconds & co.: DriftJobStale tells "never succeeded since start"
    ProcessCollector(registry=registry)
    metrics = DriftMetrics(registry)
    lock = threading.Lock()
    last: dict[str, Any] = {"ok": None, "finished_at": None}

    def job() -> None:
        with lock:
            result = run_once(settings, metrics)
            last.update(ok=result.ok, finished_at=time.time(), error=result.error)

    def health() -> dict[str, Any]:
        return {"status": "ok", "last_run": last, "cron": settings.cron}

    try:
        server = make_server(settings.host, settings.port, registry, settings.reports_dir, health)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 2
    serve_in_thread(server)
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

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "drift scheduler started (cron %r, UTC); http://%s:%d/metrics, /reports/latest.html",
        settings.cron,
        settings.host,
        settings.port,
    )
    try:
        scheduler.start()
    except KeyboardInterrupt:
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        server.shutdown()
        log.info("drift scheduler stopped")
    return 0


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
