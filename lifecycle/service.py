"""``python -m lifecycle serve``: scheduled retraining, an Alertmanager webhook, /metrics.

Retrains on a cron schedule (weekly by default) and when Alertmanager reports one of the
watched alerts (DataDriftDetected, JaccardLow) firing — debounced, one retrain at a time, and
only when enough questions were labelled since the last retrain. The webhook answers at once;
the retrain runs in a background thread and its outcome is in /healthz, the metrics and MLflow.

Guarded: ``POST /retrain`` and ``POST /webhook`` need ``Authorization: Bearer <token>`` (the
token in ``TAGWATCH_LIFECYCLE_TOKEN_FILE``; Alertmanager's lifecycle receiver sends it); without
a token file the service does not start, unless ``TAGWATCH_LIFECYCLE_AUTH=open``. Whatever
starts a retrain (webhook, POST /retrain, cron, CLI), at most one runs at a time across
processes and at most one per ``TAGWATCH_RETRAIN_MIN_INTERVAL_MINUTES`` (lifecycle/lock.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException

from lifecycle.lock import LastRetrain, last_retrain, throttle_reason, throttle_wait
from lifecycle.metrics import LifecycleMetrics
from lifecycle.settings import LifecycleSettings
from store import PredictionStore, StoreError, open_store
from tagger.secrets import SecretError, check_bearer, read_secret

log = logging.getLogger("lifecycle.service")

MAX_WEBHOOK_BYTES = 1 << 20
GUARDED_PATHS = ("/retrain", "/webhook")


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
    """One retrain at a time in this process (and across processes: lifecycle/lock.py)."""

    def __init__(
        self, settings: LifecycleSettings, metrics: LifecycleMetrics, token: str | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.token = token  # None: the explicit open mode (TAGWATCH_LIFECYCLE_AUTH=open)
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._store: PredictionStore | None = None
        self.last: dict[str, Any] = {"outcome": None, "finished_at": None, "line": None}
        self.thread: threading.Thread | None = None

    def last_retrain(self) -> LastRetrain | None:
        """The last retrain that counted, whichever process ran it: a retrain skipped for too
        little data, or refused (busy, throttled), does not reset the debounce."""
        return last_retrain(self.settings)

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

    def new_labelled(self, since: float) -> int:
        """Questions served since ``since`` with feedback: one COUNT on a store kept open."""
        with self._state_lock:
            if self._store is None:
                self._store = open_store(self.settings.store_url, readonly=True)
            store = self._store
        return store.count_labelled(since, time.time() + 1)

    def running(self) -> bool:
        """A retrain started by this process runs now."""
        return self._lock.locked()

    def close(self) -> None:
        with self._state_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def throttle(self, last: LastRetrain | None, now: float) -> tuple[float, str]:
        """(seconds to wait, why) before a retrain may start; (0, "") when it may now."""
        minutes = self.settings.retrain_min_interval_minutes
        wait = throttle_wait(last, minutes, now)
        if wait <= 0 or last is None:
            return 0.0, ""
        return wait, throttle_reason(last, minutes, now)

    def _run(self, source: str) -> None:
        from lifecycle.retrain import retrain

        try:
            out = retrain(self.settings, metrics=self.metrics, source=source)
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
        """Start a retrain unless one is running here; False when busy. Another process's
        retrain or the interval may still refuse it: /healthz's ``last`` says so."""
        if not self._lock.acquire(blocking=False):
            return False
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
            return self._webhook("ignored", 200, reason="no watched alert firing")
        now = time.time()
        last = self.last_retrain()
        since = now - last.started_at if last else math.inf
        if since < self.settings.webhook_debounce_seconds:
            wait = self.settings.webhook_debounce_seconds - since
            return self._webhook(
                "debounced",
                200,
                watched,
                f"last retrain started {since:.0f} s ago; next allowed in {wait:.0f} s",
            )
        if self.running():
            return self._webhook("busy", 200, watched, "a retrain is running")
        wait, why = self.throttle(last, now)
        if wait > 0:
            return self._webhook("throttled", 200, watched, why)
        try:
            n = self.new_labelled(last.started_at if last else 0.0)
        except StoreError as exc:
            return self._webhook("not_enough_data", 200, watched, f"store unreadable: {exc}")
        minimum = self.settings.webhook_min_new_labelled
        if n < minimum:
            return self._webhook(
                "not_enough_data",
                200,
                watched,
                f"{n} questions labelled since the last retrain, fewer than {minimum}",
            )
        if not self.start_retrain("webhook " + ",".join(watched)):
            return self._webhook("busy", 200, watched, "a retrain is running")
        self.metrics.webhook.labels("triggered").inc()
        return 202, {"action": "triggered", "alerts": watched, "new_labelled": n}

    def _webhook(
        self, action: str, status: int, alerts: list[str] | None = None, reason: str = ""
    ) -> tuple[int, dict[str, Any]]:
        self.metrics.webhook.labels(action).inc()
        body: dict[str, Any] = {"action": action, "reason": reason}
        if alerts is not None:
            body["alerts"] = alerts
        return status, body


def _json_error(status: int, message: str, **headers: str) -> tuple[Response, int]:
    response = jsonify({"error": message, "status": status})
    response.headers.update(headers)
    return response, status


def create_app(service: LifecycleService, registry: CollectorRegistry) -> Flask:
    app = Flask("lifecycle")
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES

    def error(status: int, message: str) -> tuple[Response, int]:
        service.metrics.webhook.labels("invalid").inc()
        return _json_error(status, message)

    app.before_request(lambda: _guard(service))
    _json_errors(app, error)

    @app.post("/webhook")
    def webhook() -> Any:
        if not request.is_json:
            return error(415, "Content-Type must be application/json")
        try:
            # RecursionError: nested deeper than the parser's stack (100k brackets)
            payload = json.loads(request.get_data(cache=False))
        except (ValueError, RecursionError):
            return error(400, "body is not valid JSON (or nested too deeply)")
        try:
            names = firing_alerts(payload)
        except WebhookError as exc:
            return error(400, str(exc))
        status, body = service.on_alerts(names)
        log.info("webhook %s: %s", body["action"], body.get("reason") or body.get("alerts"))
        return jsonify(body), status

    @app.post("/retrain")
    def retrain_now() -> Any:
        """An operator's "retrain now" (``make demo`` ends with one): no debounce, no minimum of
        new labels (the gate still decides), but at most one per the minimum interval; its
        outcome lands in the service's metrics, which the weekly summary reads."""
        if service.running():
            service.metrics.retrain_requests.labels("busy").inc()
            return jsonify({"action": "busy", "reason": "a retrain is running"}), 409
        wait, why = service.throttle(service.last_retrain(), time.time())
        if wait > 0:
            service.metrics.retrain_requests.labels("throttled").inc()
            response = jsonify({"action": "throttled", "reason": why})
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response, 429
        if not service.start_retrain("manual"):
            service.metrics.retrain_requests.labels("busy").inc()
            return jsonify({"action": "busy", "reason": "a retrain is running"}), 409
        service.metrics.retrain_requests.labels("started").inc()
        return jsonify({"action": "started", "status_url": "/healthz"}), 202

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Any:
        last = service.last_retrain()
        return jsonify(
            {
                "status": "ok",
                "auth": "token" if service.token else "open",
                "cron": service.settings.retrain_cron,
                "min_interval_minutes": service.settings.retrain_min_interval_minutes,
                "retrain_running": service.running(),
                "last_started": last.started_at if last else None,
                "last_started_by": last.source if last else None,
                "last": service.last,
            }
        )

    return app


def _guard(service: LifecycleService) -> Any:
    """POST /retrain and /webhook need the bearer token (unless the service is open)."""
    if request.method != "POST" or request.path not in GUARDED_PATHS or service.token is None:
        return None
    if check_bearer(service.token, request.headers.get("Authorization")):
        return None
    if request.path == "/webhook":
        service.metrics.webhook.labels("unauthorized").inc()
    else:
        service.metrics.retrain_requests.labels("unauthorized").inc()
    return _json_error(
        401,
        f"POST {request.path} needs Authorization: Bearer <the token in "
        "TAGWATCH_LIFECYCLE_TOKEN_FILE>",
        **{"WWW-Authenticate": 'Bearer realm="tagwatch-lifecycle"'},
    )


def _json_errors(app: Flask, invalid: Callable[[int, str], tuple[Response, int]]) -> None:
    """Every error is JSON: too large (counted invalid), any HTTP error, anything unexpected."""

    @app.errorhandler(413)
    def too_large(exc: Exception) -> Any:
        return invalid(413, f"body larger than {MAX_WEBHOOK_BYTES} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        names = {404: "not found", 405: "method not allowed"}
        return _json_error(status, names.get(status, exc.description or exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("%s %s failed", request.method, request.path)
        return _json_error(500, f"internal error ({type(exc).__name__}); see the service's log")


def service_token(settings: LifecycleSettings) -> str | None:
    """The bearer token the service requires; None only in the explicit open mode.

    Raises :class:`SecretError` naming the setting when the token is missing or unusable.
    """
    if settings.lifecycle_auth == "open":
        if settings.lifecycle_token_file is not None:
            log.warning("TAGWATCH_LIFECYCLE_AUTH=open: TAGWATCH_LIFECYCLE_TOKEN_FILE is ignored")
        log.warning("TAGWATCH_LIFECYCLE_AUTH=open: anyone who reaches this port can start retrains")
        return None
    token = read_secret(settings.lifecycle_token_file, "TAGWATCH_LIFECYCLE_TOKEN_FILE")
    if token is None:
        raise SecretError(
            "TAGWATCH_LIFECYCLE_TOKEN_FILE is not set: POST /retrain and /webhook need a bearer "
            "token; name a file holding one (scripts/make-secrets.sh makes it), or set "
            "TAGWATCH_LIFECYCLE_AUTH=open to let anyone who reaches the port start retrains"
        )
    return token


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
    try:
        token = service_token(settings)
    except SecretError as exc:
        log.error("%s", exc)
        return 2
    registry = CollectorRegistry()
    service = _new_service(settings, registry, token)
    try:
        server = make_server(
            settings.host, settings.port, create_app(service, registry), threaded=True
        )
    except (OSError, SystemExit) as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 2
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
        service.close()
        log.info("lifecycle service stopped")
    return 0


def _new_service(
    settings: LifecycleSettings, registry: CollectorRegistry, token: str | None
) -> LifecycleService:
    """The service with its metrics (process ones included) in the registry /metrics shows."""
    metrics = LifecycleMetrics(registry, process=True)
    metrics.recovery_min.set(settings.concept_drift_min_recovery)
    return LifecycleService(settings, metrics, token)


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
