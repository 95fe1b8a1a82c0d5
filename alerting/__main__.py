"""``python -m alerting``: the weekly summary scheduler (default), a one-off run, or the
Alertmanager configuration rendered from settings.

    python -m alerting [serve]          APScheduler (TAGWATCH_WEEKLY_CRON, default Monday
                                        08:00 UTC) + metrics on TAGWATCH_WEEKLY_PORT (8002)
    python -m alerting run-once         one summary now; exit code 1 on failure
    python -m alerting render-config    alertmanager.yml from TAGWATCH_SMTP_* etc.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from pydantic import ValidationError

from alerting.amconfig import render_config
from alerting.metrics import WeeklyMetrics
from alerting.settings import AlertingSettings

log = logging.getLogger("alerting")


def _parse_end(value: str) -> datetime:
    try:
        end = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--end: not an ISO date/time: {value!r}") from exc
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alerting", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the weekly scheduler and serve its metrics (default)")
    once = sub.add_parser("run-once", help="write and send one weekly summary now")
    once.add_argument("--end", type=_parse_end, help="end of the week (ISO, UTC); default now")
    once.add_argument("--no-email", action="store_true", help="write the report file only")
    cfg = sub.add_parser("render-config", help="print alertmanager.yml rendered from settings")
    cfg.add_argument("--output", type=Path, help="write to this file instead of stdout")
    cfg.add_argument(
        "--defaults", action="store_true", help="ignore TAGWATCH_* variables (the committed file)"
    )
    return parser


def serve(settings: AlertingSettings) -> int:
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    from alerting.weekly import run_weekly

    registry = CollectorRegistry()
    # process_start_time_seconds & co.: DriftJobStale tells "never succeeded since start"
    ProcessCollector(registry=registry)
    metrics = WeeklyMetrics(registry)
    try:
        trigger = CronTrigger.from_crontab(settings.weekly_cron, timezone=UTC)
    except ValueError as exc:
        log.error("TAGWATCH_WEEKLY_CRON=%r: %s", settings.weekly_cron, exc)
        return 2
    start_http_server(settings.weekly_port, addr=settings.weekly_host, registry=registry)

    def job() -> None:
        try:
            run_weekly(settings, metrics)
        except Exception:
            log.exception("weekly summary failed (the scheduler keeps going)")

    scheduler = BlockingScheduler(timezone=UTC)
    scheduler.add_job(
        job, trigger, id="weekly", max_instances=1, coalesce=True, misfire_grace_time=3600
    )
    log.info(
        "weekly summary scheduled '%s' UTC; metrics on http://%s:%d/metrics",
        settings.weekly_cron, settings.weekly_host, settings.weekly_port,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        scheduler.start()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = (
            AlertingSettings.model_construct()
            if getattr(args, "defaults", False)
            else AlertingSettings()
        )
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            print(f"error: TAGWATCH_{field.upper()}: {err['msg']}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
    if args.command == "render-config":
        text = render_config(settings)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text, encoding="utf-8")
            log.info("Alertmanager configuration written to %s", args.output)
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "run-once":
        from alerting.weekly import open_existing_store, run_weekly  # pandas: only when needed

        try:
            store = open_existing_store(settings)
        except Exception as exc:  # StoreError: not a store, unreadable
            print(f"error: TAGWATCH_STORE_URL: {exc}", file=sys.stderr)
            return 1
        if store is None:
            print(
                f"error: no store at {settings.store_url} (the predictor creates it)",
                file=sys.stderr,
            )
            return 1
        store.close()

        try:
            path = run_weekly(
                settings, WeeklyMetrics(CollectorRegistry()), args.end, not args.no_email
            )
        except Exception as exc:
            log.error("weekly summary failed: %s", exc)
            return 1
        print(path)
        return 0
    return serve(settings)


if __name__ == "__main__":
    raise SystemExit(main())
