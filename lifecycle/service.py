"""``python -m lifecycle serve``: scheduled retraining, an Alertmanager webhook, /metrics.

Retrains on a cron schedule (weekly by default) and when Alertmanager reports one of the
watched alerts (DataDriftDetected, JaccardLow) firing — debounced, one retrain at a time, and
only when enough questions were labelled since the last retrain. The webhook answers at once;
the retrain runs in a background thread and its outcome is in /healthz, the metrics and MLflow.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from datetime import UTC
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lifecycle.metrics import LifecycleMetrics
from lifecycle.settings import LifecycleSettings
from store import open_store

log = logging.getLogger("lifecycle.service")

MAX_WEBHOOK_BYTES = 1 << 20


class WebhookError(ValueError):
    """A webhook payload that is not Alertmanager's format; the message names the field."""


def firing_alerts(payload: Any) -> list[str]:
    """Names of the firing alerts in an Alertmanager webhook payload (version 4)."""
    if not isinstance(payload, dict):
        raise WebhookError("body must be a JSON object (Alertmanager webhook format)")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise WebhookError("alerts: must be a list")
    names = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise WebhookError(f"alerts[{i}]: must be an object")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not isinstance(labels.get("alertname"), str):
            raise WebhookError(f"alerts[{i}].labels.alertname: must be a string")
        status = alert.get("status", payload.get("status"))
        if status not in ("firing", "resolved"):
            raise WebhookError(f"alerts[{i}].status: must be 'firing' or 'resolved'")
        if status == "firing":
            names.append(labels["alertname"])
    return names


class LifecycleService:
    """One retrain at a time, whatever started it; remembers when the last one started."""

    def __init__(self, settings: LifecycleSettings, metrics: LifecycleMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.last_started: float = 0.0
        self.last: dict[str, Any] = {"outcome": None, "finished_at": None, "line": None}
        self.thread: threading.Thread | None = None

    def load_last_started(self) -> None:
        """When the last retrain ran (MLflow), so a restart does not forget the debounce."""
        try:
            from mlflow import MlflowClient

            from tagger.tracking import configure_mlflow

            exp = configure_mlflow(self.settings)
            runs = MlflowClient().search_runs(
                [exp],
                "tags.kind = 'retrain'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        except Exception as exc:
            log.warning("MLflow unreachable, last retrain time unknown: %s", exc)
            return
        if runs:
            self.last_started = runs[0].info.start_time / 1000.0

    def refresh_champion(self) -> None:
        """Champion version and age gauges (0 when none or MLflow is unreachable)."""
        try:
            from lifecycle.registry import Registry

            ref = Registry(self.settings).champion()
        except Exception as exc:
            log.warning("champion unknown: %s", exc)
            ref = None
        self.metrics.champion_version.set(ref.version if ref else 0)
        self.metrics.champion_created.set(ref.created_at if ref else 0)

    def new_labelled(self) -> int:
        store = open_store(self.settings.store_url)
        try:
            return len(store.labelled(self.last_started, time.time() + 1))
        finally:
            store.close()

    def _run(self, source: str) -> None:
        from lifecycle.retrain import retrain

        try:
            out = retrain(self.settings, metrics=self.metrics)
            with self._state_lock:
                self.last = {
                    "outcome": out.outcome,
                    "finished_at": time.time(),
                    "line": out.line(),
                    "source": source,
                }
            self.refresh_champion()
        finally:
            self._lock.release()

    def start_retrain(self, source: str, background: bool = True) -> bool:
        """Start a retrain unless one is running; False when busy."""
        if not self._lock.acquire(blocking=False):
            return False
        self.last_started = time.time()
        log.info("retrain started (%s)", source)
        if background:
            self.thread = threading.Thread(
                target=self._run, args=(source,), name="retrain", daemon=True
            )
            self.thread.start()
        else:
            self._run(source)
        return True

    def on_alerts(self, names: list[str]) -> tuple[int, dict[str, Any]]:
        """The webhook's decision: (HTTP status, JSON body)."""
        watched = sorted(set(names) & set(self.settings.webhook_alerts))
        if not watched:
            self.metrics.webhook.labels("ignored").inc()
            return 200, {"action": "ignored", "reason": "no watched alert firing"}
        since = time.time() - self.last_started
        if since < self.settings.webhook_debounce_seconds:
            self.metrics.webhook.labels("debounced").inc()
            wait = self.settings.webhook_debounce_seconds - since
            return 200, {
                "action": "debounced",
                "alerts": watched,
                "reason": f"last retrain started {since:.0f} s ago; next allowed in {wait:.0f} s",
            }
        if self._lock.locked():
            self.metrics.webhook.labels("busy").inc()
            return 200, {"action": "busy", "alerts": watched, "reason": "a retrain is running"}
        n = self.new_labelled()
        if n < self.settings.webhook_min_new_labelled:
            self.metrics.webhook.labels("not_enough_data").inc()
            return 200, {
                "action": "not_enough_data",
                "alerts": watched,
                "reason": f"{n} questions labelled since the last retrain, fewer than "
                f"{self.settings.webhook_min_new_labelled}",
            }
        if not self.start_retrain("webhook " + ",".join(watched)):
            self.metrics.webhook.labels("busy").inc()
            return 200, {"action": "busy", "alerts": watched, "reason": "a retrain is running"}
        self.metrics.webhook.labels("triggered").inc()
        return 202, {"action": "triggered", "alerts": watched, "new_labelled": n}


def create_app(service: LifecycleService, registry: CollectorRegistry) -> Flask:
    app = Flask("lifecycle")
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES

    def error(status: int, message: str) -> tuple[Response, int]:
        service.metrics.webhook.labels("invalid").inc()
        return jsonify({"error": message, "status": status}), status

    @app.post("/webhook")
    def webhook() -> Any:
        if not request.is_json:
            return error(415, "Content-Type must be application/json")
        payload = request.get_json(silent=True)
        if payload is None:
            return error(400, "body is not valid JSON")
        try:
            names = firing_alerts(payload)
        except WebhookError as exc:
            return error(400, str(exc))
        status, body = service.on_alerts(names)
        log.info("webhook %s: %s", body["action"], body.get("reason", body.get("alerts")))
        return jsonify(body), status

    @app.post("/retrain")
    def retrain_now() -> Any:
        """An operator's "retrain now" (``make demo`` ends with one): no debounce, no minimum of
        new labels (the gate still decides); its outcome lands in the service's metrics, which
        the weekly summary reads, unlike a separate ``python -m lifecycle retrain``."""
        if not service.start_retrain("manual"):
            return jsonify({"action": "busy", "reason": "a retrain is running"}), 409
        return jsonify({"action": "started", "status_url": "/healthz"}), 202

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(
            {
                "status": "ok",
                "cron": service.settings.retrain_cron,
                "retrain_running": service._lock.locked(),
                "last_started": service.last_started or None,
                "last": service.last,
            }
        )

    @app.errorhandler(404)
    def not_found(exc: Exception) -> Any:
        return jsonify({"error": "not found", "status": 404}), 404

    @app.errorhandler(405)
    def not_allowed(exc: Exception) -> Any:
        return jsonify({"error": "method not allowed", "status": 405}), 405

    @app.errorhandler(413)
    def too_large(exc: Exception) -> Any:
        return error(413, f"body larger than {MAX_WEBHOOK_BYTES} bytes")

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-on-start", action="store_true", help="also retrain once at start-up")


def run(args: argparse.Namespace, settings: LifecycleSettings) -> int:
    from werkzeug.serving import make_server

    from drift.__main__ import cron_trigger

    try:
        trigger = cron_trigger(settings.retrain_cron)
    except ValueError as exc:
        log.error(
            "TAGWATCH_RETRAIN_CRON %r is not a cron expression: %s", settings.retrain_cron, exc
        )
        return 2
    registry = CollectorRegistry()
    service = _new_service(settings, registry)
    try:
        server = make_server(
            settings.host, settings.port, create_app(service, registry), threaded=True
        )
    except (OSError, SystemExit) as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 2
    service.load_last_started()
    service.refresh_champion()
    scheduler = _start_scheduler(service, trigger)
    if args.run_on_start:
        service.start_retrain("start")
    _shutdown_on_signals(server)
    log.info(
        "lifecycle service started (retrain cron %r, UTC); http://%s:%d/webhook, /metrics",
        settings.retrain_cron,
        settings.host,
        settings.port,
    )
    try:
        server.serve_forever()
    finally:
        scheduler.shutdown(wait=False)
        log.info("lifecycle service stopped")
    return 0


def _new_service(settings: LifecycleSettings, registry: CollectorRegistry) -> LifecycleService:
    """The service with its metrics (process ones included) in the registry /metrics shows."""
    metrics = LifecycleMetrics(registry, process=True)
    metrics.recovery_min.set(settings.concept_drift_min_recovery)
    return LifecycleService(settings, metrics)


def _start_scheduler(service: LifecycleService, trigger: Any) -> Any:
    """Cron retrains (one at a time, coalesced) and a minutely refresh of the champion gauges."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone=UTC)

    def scheduled() -> None:
        if not service.start_retrain("schedule", background=False):
            log.warning("scheduled retrain skipped: a retrain is running")

    scheduler.add_job(
        scheduled,
        trigger,
        id="retrain",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=service.settings.misfire_grace_seconds,
    )
    scheduler.add_job(service.refresh_champion, "interval", seconds=60, id="champion")
    scheduler.start()
    return scheduler


def _shutdown_on_signals(server: Any) -> None:
    """SIGTERM/SIGINT stop serve_forever from another thread (it cannot stop itself)."""

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
