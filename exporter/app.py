"""The predictor: a Flask app factory serving tags, taking feedback, exposing metrics."""

from __future__ import annotations

import atexit
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import HTTPException

from exporter.credentials import load_credentials
from exporter.metrics import NoMetrics, PredictorMetrics, SupervisorCollector
from exporter.openapi import load_openapi
from exporter.settings import PredictorSettings
from exporter.signing import check_bearer, check_signature
from exporter.supervisor import SupervisorStatus, read_status
from exporter.validation import ApiError, FeedbackRequest, parse_feedback, parse_predict
from store import (
    FeedbackRecord,
    PredictionRecord,
    PredictionStore,
    StoreError,
    WriteBehindStore,
    id_signed_by,
    is_unsigned_id,
    minted_at,
    new_prediction_id,
    open_store,
    spool_dir_for,
)
from store.retention import run_retention
from tagger.artefact import Artefact, ArtefactError, load_artefact, load_per_tag
from tagger.metrics import coverage, jaccard

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("exporter")
bp = Blueprint("predictor", __name__)
RETRY_AFTER_SECONDS = 2  # sent with every 503: the store retries writes at least this often
# a request thread waits this long for another writer's lock; the store's writer thread 1 s
REQUEST_BUSY_TIMEOUT_SECONDS = 0.02


@dataclass
class Services:
    """What the request handlers need; built once per app (per gunicorn worker)."""

    settings: PredictorSettings
    registry: CollectorRegistry
    metrics: PredictorMetrics
    artefact: Artefact | None
    artefact_error: str | None
    store: PredictionStore | None
    store_error: str | None
    vocabulary: frozenset[str]
    # credentials for GET /predictions/<id> (exporter/signing.py); None: that way is closed
    api_token: str | None = None
    link_secret: str | None = None
    # POST /feedback (exporter/credentials.py): the token, or why feedback is closed
    feedback_token: str | None = None
    feedback_closed: str | None = None
    id_secret: bytes | None = None  # signs prediction ids (store.records.new_prediction_id)
    writer: WriteBehindStore | None = None  # the same object as ``store``: backlog, health


def _services() -> Services:
    services: Services = current_app.extensions["tagwatch"]
    return services


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "expected Content-Type: application/json")
    try:
        # a malformed chunked body or a client gone mid-body surfaces here, as an OSError
        data = request.get_data(cache=True)
    except OSError as exc:
        raise ApiError(400, "the request body could not be read (malformed or incomplete)") from exc
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack (e.g. 1,000 brackets)
        raise ApiError(400, "the request body is not valid JSON (or nested too deeply)") from None
    return payload


@bp.post("/predict")
def predict() -> tuple[Response, int]:
    s = _services()
    if s.artefact is None:
        raise ApiError(503, f"model not loaded: {s.artefact_error}")
    req = parse_predict(_json_body(), s.settings.max_title_chars, s.settings.max_body_bytes)
    t0 = time.perf_counter()
    analysis = s.artefact.model.analyse(req.title, req.body)
    seconds = time.perf_counter() - t0
    prediction_id = new_prediction_id(s.id_secret)
    if s.store is not None:
        record = PredictionRecord(
            id=prediction_id,
            created_at=time.time(),
            title=req.title,
            body=req.body,
            url=req.url,
            tags=analysis.tags,
            scores=analysis.scores,
            inference_seconds=seconds,
            model_version=s.artefact.version,
            features=analysis.features,
        )
        try:
            s.store.save_prediction(record)  # queued; written by the store's writer thread
        except Exception:  # a store failure must never fail a prediction
            log.exception("store: prediction %s not saved", prediction_id)
            s.metrics.observe_store_error()
    s.metrics.observe_prediction(analysis.tags, analysis.features, seconds)
    body = {
        "prediction_id": prediction_id,
        "tags": analysis.tags,
        "scores": analysis.scores,
        "model_version": s.artefact.version,
    }
    return jsonify(body), 200


@bp.post("/feedback")
def feedback() -> tuple[Response, int]:
    s = _services()
    source = _feedback_source(s)  # before the body is read: 401 costs nothing
    req = parse_feedback(_json_body())
    _check_minted_here(s, req.prediction_id)
    if s.store is None:
        if s.store_error == "disabled":
            raise ApiError(503, "feedback needs the prediction store, which is disabled")
        raise ApiError(503, f"the prediction store is unavailable: {s.store_error}")
    try:
        body, status = _record_feedback(s, s.store, req, source)
    except ApiError:
        raise
    except Exception as exc:
        log.exception("store: feedback for %s not saved", req.prediction_id)
        s.metrics.observe_store_error()
        raise ApiError(503, "the prediction store is unavailable; retry later") from exc
    return jsonify(body), status


def _feedback_source(s: Services) -> str:
    """Which credential this feedback comes with ("token" or "open", stored with it); 401
    without the feedback token, 503 when feedback is closed by the predictor's settings."""
    authorization = request.headers.get("Authorization")
    if s.feedback_token is not None and check_bearer(s.feedback_token, authorization):
        return "token"
    if s.settings.feedback_auth == "open":
        if s.feedback_token is not None and authorization:
            raise ApiError(401, "invalid feedback token (send none, or the right one)")
        return "open"
    if s.feedback_closed is not None:
        raise ApiError(503, s.feedback_closed)
    raise ApiError(401, "POST /feedback needs the feedback token: Authorization: Bearer <token>")


def _check_minted_here(s: Services, prediction_id: str) -> None:
    """With an id secret, an id without its valid tag was never minted by this stack: 404 at
    once, nothing read or stored. An untagged id (served before the secret was set) is looked
    up, never kept pending (see _record_feedback)."""
    if s.id_secret is None or is_unsigned_id(prediction_id):
        return
    if not id_signed_by(prediction_id, s.id_secret):
        raise ApiError(
            404, f"unknown prediction_id: {prediction_id} (not minted here)", "prediction_id"
        )


# an id minted up to this far in the future is another host's clock running ahead
CLOCK_SKEW_SECONDS = 60.0


def _minted_within(prediction_id: str, seconds: float) -> bool:
    """A missing id minted within the pending window may be in flight (another worker's queue,
    another replica's spool), not unknown."""
    minted = minted_at(prediction_id)
    return minted is not None and -CLOCK_SKEW_SECONDS <= time.time() - minted <= seconds


def score_feedback(predicted: Sequence[str], tags: Sequence[str]) -> tuple[float, float]:
    """(coverage, jaccard) of user tags against the predicted ones."""
    return coverage(predicted, tags), jaccard(predicted, tags)


def _record_feedback(
    s: Services, store: PredictionStore, req: FeedbackRequest, source: str
) -> tuple[dict[str, Any], int]:
    """Score and store feedback once (200); the same feedback again is acknowledged, not
    counted. Feedback for a recent prediction this process cannot see yet is kept pending
    (202): the writers store and count it once the prediction arrives."""
    prediction = store.get_prediction(req.prediction_id)
    if prediction is None and s.writer is not None and (problem := s.writer.problem()):
        # another worker may hold it queued: the store, not the id, is the problem (503)
        raise StoreError(f"prediction not found while the store is failing ({problem})")
    n_unknown = sum(1 for t in req.tags if t not in s.vocabulary)
    if prediction is None:
        # with an id secret only a tagged id may be in flight (an untagged one is older)
        may_be_in_flight = s.id_secret is None or not is_unsigned_id(req.prediction_id)
        if not may_be_in_flight or not _minted_within(
            req.prediction_id, s.settings.feedback_pending_seconds
        ):
            raise ApiError(404, f"unknown prediction_id: {req.prediction_id}", "prediction_id")
        outcome = store.save_pending_feedback(
            req.prediction_id, req.tags, n_unknown, time.time(), source
        )
        if outcome == "conflict":
            raise ApiError(
                409, f"prediction {req.prediction_id} already has different feedback", "tags"
            )
        pending: dict[str, Any] = {"status": "pending", "prediction_id": req.prediction_id}
        if outcome == "duplicate":
            s.metrics.observe_duplicate_feedback()
            pending["duplicate"] = True
        else:
            s.metrics.observe_pending_feedback()
        return pending, 202
    previous = store.get_feedback(req.prediction_id)
    if previous is None:
        cov, jac = score_feedback(prediction.tags, req.tags)
        record = FeedbackRecord(
            prediction_id=req.prediction_id,
            tags=req.tags,
            coverage=cov,
            jaccard=jac,
            n_unknown_tags=n_unknown,
            source=source,
        )
        if store.save_feedback(record):
            s.metrics.observe_feedback(
                record.coverage, record.jaccard, len(record.tags), record.n_unknown_tags
            )
            s.metrics.observe_tag_feedback(prediction.tags, record.tags)
            return {"coverage": record.coverage, "jaccard": record.jaccard}, 200
        previous = store.get_feedback(req.prediction_id)  # another worker won the race
        if previous is None:
            raise StoreError("feedback neither inserted nor found")
    if sorted(previous.tags) != sorted(req.tags):
        # never echo the stored tags: they are someone else's feedback
        raise ApiError(
            409, f"prediction {req.prediction_id} already has different feedback", "tags"
        )
    s.metrics.observe_duplicate_feedback()
    return {"coverage": previous.coverage, "jaccard": previous.jaccard, "duplicate": True}, 200


@bp.get("/predictions/<prediction_id>")
def prediction(prediction_id: str) -> tuple[Response, int]:
    """One stored question with its prediction and feedback: the target of links in emails."""
    s = _services()
    _authorize_read(s, prediction_id)
    if s.store is None:
        raise ApiError(503, "the prediction store is disabled")
    try:
        record = s.store.get_prediction(prediction_id)
        fb = s.store.get_feedback(prediction_id) if record else None
    except Exception as exc:
        s.metrics.observe_store_error()
        raise ApiError(503, "the prediction store is unavailable; retry later") from exc
    if record is None:
        raise ApiError(404, f"unknown prediction_id: {prediction_id}", "prediction_id")
    body: dict[str, Any] = {
        "prediction_id": record.id,
        "created_at": record.created_at,
        "title": record.title,
        "body": record.body,
        "url": record.url,
        "tags": record.tags,
        "scores": record.scores,
        "inference_seconds": record.inference_seconds,
        "model_version": record.model_version,
        "features": record.features,
        "feedback": None
        if fb is None
        else {"tags": fb.tags, "coverage": fb.coverage, "jaccard": fb.jaccard},
    }
    return jsonify(body), 200


def _authorize_read(s: Services, prediction_id: str) -> None:
    """A bearer token or a signed, unexpired link; else 401 (stored questions are user data)."""
    if s.api_token is None and s.link_secret is None:
        raise ApiError(
            403,
            "reading stored questions is disabled: set TAGWATCH_API_TOKEN_FILE "
            "or TAGWATCH_LINK_SECRET_FILE",
        )
    if s.api_token is not None and check_bearer(s.api_token, request.headers.get("Authorization")):
        return
    expires, signature = request.args.get("expires"), request.args.get("signature")
    if expires is not None and signature is not None and s.link_secret is not None:
        problem = check_signature(s.link_secret, prediction_id, expires, signature)
        if problem is None:
            return
        raise ApiError(403, problem)
    raise ApiError(401, "a bearer token (Authorization: Bearer ...) or a signed link is needed")


@bp.get("/openapi.json")
def openapi() -> tuple[Response, int]:
    """The API description (exporter/openapi.yaml), for clients and the fuzz tests."""
    return jsonify(load_openapi()), 200


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    s = _services()
    problems = []
    if s.artefact is None:
        problems.append(f"model: {s.artefact_error}")
    if s.store is None and s.settings.store_enabled:
        problems.append(f"store: {s.store_error}")
    elif s.writer is not None and (problem := s.writer.problem()) is not None:
        problems.append(f"store: {problem}")  # the real outcome of the latest writes
    elif s.store is not None:
        try:
            s.store.check_writable()
        except StoreError as exc:
            problems.append(f"store: {exc}")
    if problems:
        return jsonify({"status": "not ready", "problems": problems}), 503
    assert s.artefact is not None
    body: dict[str, Any] = {"status": "ready", "model_version": s.artefact.version}
    refused = _refused_model(s)
    if refused is not None:  # serving, on the last good version: ready, with a warning
        body["refused_model"] = refused
        body["warnings"] = [
            f"model {refused['version']} refused ({refused['reason']}): serving "
            f"{s.artefact.version}, the last good version (docs/runbook.md#modelloadfailed)"
        ]
    return jsonify(body), 200


def _refused_model(s: Services) -> dict[str, Any] | None:
    """The supervisor's refusal of the wanted version while this worker serves another."""
    status = read_status(s.settings.multiproc_dir)
    if status is None or not status.refused or s.artefact is None:
        return None
    if status.refused.get("version") == s.artefact.version:
        return None  # this worker serves it: the refusal is stale or another worker's
    return dict(status.refused)


@bp.get("/metrics")
def metrics() -> Response:
    s = _services()
    s.metrics.flush()  # this worker's queued observations; the others flush on their own
    if s.writer is not None:
        s.metrics.set_store_backlog(*s.writer.backlog())
    if s.settings.multiproc_dir is not None:
        # under gunicorn each worker writes its own files; totals are summed at read time
        registry = CollectorRegistry()
        # dead workers' per-tag series of tags the served model no longer has are left out
        files = MultiProcessCollector(None, path=str(s.settings.multiproc_dir))
        for collector in s.metrics.exposed(files):
            registry.register(collector)
        if s.settings.metrics_enabled:
            path = s.settings.multiproc_dir
            registry.register(SupervisorCollector(lambda: read_status(path)))
        data = generate_latest(registry)
    else:
        data = generate_latest(s.registry)
    return Response(data, content_type=CONTENT_TYPE_LATEST)  # mimetype= would add a 2nd charset


_PATH_LABELS = {
    "/predict": "predict",
    "/feedback": "feedback",
    "/metrics": "metrics",
    "/healthz": "healthz",
    "/readyz": "readyz",
}


class _TimedRequests:
    """WSGI middleware: each request's count and duration by endpoint and status.

    A middleware instead of Flask's before/after-request hooks: those reach ``g`` and
    ``request`` through context-local proxies, which cost more per request than the metric
    itself, on a path where 10 µs is ~1 % of the predictor's throughput.
    """

    def __init__(self, app: Any, metrics: PredictorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        t0 = time.perf_counter()
        status = 0

        def timed_start_response(code: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = int(code[:3])
            return start_response(code, headers, exc_info)

        body = self.app(environ, timed_start_response)
        path = environ.get("PATH_INFO", "")
        label = _PATH_LABELS.get(path) or (
            "prediction" if path.startswith("/predictions/") else "other"
        )
        self.metrics.observe_request(label, status, time.perf_counter() - t0)
        return body


def _api_error(exc: ApiError) -> tuple[Response, int]:
    if exc.status >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc.message)
    response = jsonify(exc.to_json())
    if exc.status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    elif exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tagwatch"'

    return response, exc.status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        message = "request body too large"
    return jsonify({"error": message, "status": status}), status


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify({"error": "internal error", "status": 500}), 500


def _load_artefact(
    settings: PredictorSettings, status: SupervisorStatus | None
) -> tuple[Artefact | None, str | None]:
    """The model to serve; under the supervisor, the version it vetted (models/LATEST may name
    one still being checked)."""
    version = settings.model_version
    if version == "latest" and status is not None and status.served:
        version = status.served
    try:
        return load_artefact(settings.models_dir, version), None
    except ArtefactError as exc:
        log.error("model not loaded: %s", exc)
        return None, str(exc)


def _build_metrics(
    settings: PredictorSettings,
    registry: CollectorRegistry,
    artefact: Artefact | None,
    status: SupervisorStatus | None,
) -> PredictorMetrics:
    tags = [str(t) for t in artefact.model.classes] if artefact else []
    metrics: PredictorMetrics = NoMetrics()
    if settings.metrics_enabled:
        # under gunicorn, observations are applied in batches (see PredictorMetrics.flush)
        multiprocess = settings.multiproc_dir is not None
        metrics = PredictorMetrics(
            registry, tags, batch_size=32 if multiprocess else 1, tag_metrics=settings.tag_metrics
        )
        if multiprocess:
            metrics.start_flusher(settings.metrics_flush_seconds)
    if artefact is not None:
        metrics.set_model(artefact.card, tags, _per_tag_baseline(artefact))
        # the registry version the supervisor synced this artefact from (0: a local model)
        if status is not None:
            metrics.set_registry_version(status.registry_versions.get(artefact.version, 0))
    return metrics


def _per_tag_baseline(artefact: Artefact) -> pd.DataFrame | None:
    """The artefact's per-tag validation table; an unreadable one costs the per-tag baseline
    gauges (logged), never the model."""
    try:
        return load_per_tag(artefact.path)
    except ArtefactError as exc:
        log.error("per-tag baseline not loaded: %s", exc)
        return None


def _open_writer(
    settings: PredictorSettings, metrics: PredictorMetrics
) -> tuple[WriteBehindStore | None, str | None]:
    """The store behind its spool and writer thread. A store that cannot be opened now
    (missing, unwritable) is retried in the background; rows are queued and spooled meanwhile,
    /readyz says why."""
    if not settings.store_enabled:
        return None, "disabled"
    url = settings.store_url

    def opener() -> PredictionStore:
        return open_store(
            url,
            timeout_seconds=0.5,
            busy_timeout_seconds=REQUEST_BUSY_TIMEOUT_SECONDS,
            guard_read_only=True,
        )

    def on_store_error(exc: Exception) -> None:
        log.error("store: %s (rows kept queued and spooled, retried)", exc)
        metrics.observe_store_error()

    try:
        writer = WriteBehindStore(
            opener=opener,
            on_error=on_store_error,
            spool_dir=settings.store_spool_dir or spool_dir_for(url),
            on_dead_letter=metrics.observe_dead_letters,
            on_recovered=metrics.observe_recovered_rows,
            on_backlog=metrics.set_store_backlog,
            feedback_scorer=score_feedback,
            feedback_pending_seconds=settings.feedback_pending_seconds,
            on_feedback=metrics.observe_resolved_feedback,
            retention=partial(
                run_retention,
                retention_days=settings.retention_days,
                feature_retention_days=settings.feature_retention_days,
                on_pruned=metrics.observe_pruned,
            ),
            retention_interval_seconds=settings.retention_interval_seconds,
        )
    except StoreError as exc:
        log.error("store not opened: %s", exc)
        return None, str(exc)
    atexit.register(writer.close)  # flush queued rows when the worker exits
    return writer, None


def _load_services(settings: PredictorSettings, registry: CollectorRegistry) -> Services:
    status = read_status(settings.multiproc_dir)
    artefact, artefact_error = _load_artefact(settings, status)
    metrics = _build_metrics(settings, registry, artefact, status)
    writer, store_error = _open_writer(settings, metrics)
    credentials = load_credentials(settings)
    return Services(
        api_token=credentials.api_token,
        link_secret=credentials.link_secret,
        feedback_token=credentials.feedback_token,
        feedback_closed=credentials.feedback_closed,
        id_secret=credentials.id_secret,
        settings=settings,
        registry=registry,
        metrics=metrics,
        artefact=artefact,
        artefact_error=artefact_error,
        store=writer,
        store_error=store_error,
        vocabulary=frozenset(str(t) for t in artefact.model.classes) if artefact else frozenset(),
        writer=writer,
    )


def create_app(
    settings: PredictorSettings | None = None, registry: CollectorRegistry | None = None
) -> Flask:
    """Build the predictor. A missing model or store does not stop it: /readyz says why."""
    settings = settings or PredictorSettings()
    registry = registry if registry is not None else CollectorRegistry()
    app = Flask(__name__)
    # a request larger than any valid one is refused before it is read
    app.config["MAX_CONTENT_LENGTH"] = 8 * settings.max_body_bytes + 4 * settings.max_title_chars
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["tagwatch"] = _load_services(settings, registry)
    app.register_blueprint(bp)
    if settings.metrics_enabled:
        services: Services = app.extensions["tagwatch"]
        app.wsgi_app = _TimedRequests(app.wsgi_app, services.metrics)  # type: ignore[method-assign]
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app
