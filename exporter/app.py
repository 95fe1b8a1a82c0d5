"""The predictor: a Flask app factory serving tags, taking feedback, exposing metrics."""

from __future__ import annotations

import atexit
import logging
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import HTTPException

from exporter.metrics import NoMetrics, PredictorMetrics
from exporter.settings import PredictorSettings
from exporter.validation import ApiError, FeedbackRequest, parse_feedback, parse_predict
from store import (
    FeedbackRecord,
    PredictionRecord,
    PredictionStore,
    StoreError,
    WriteBehindStore,
    new_prediction_id,
    open_store,
)
from tagger.artefact import Artefact, ArtefactError, load_artefact
from tagger.metrics import coverage, jaccard

log = logging.getLogger("exporter")
bp = Blueprint("predictor", __name__)
FEEDBACK_RETRY_SECONDS = 0.1


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


def _services() -> Services:
    services: Services = current_app.extensions["tagwatch"]
    return services


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "expected Content-Type: application/json")
    payload = request.get_json(silent=True)
    if payload is None:
        raise ApiError(400, "the request body is not valid JSON")
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
    prediction_id = new_prediction_id()
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
    req = parse_feedback(_json_body())
    if s.store is None:
        if s.store_error == "disabled":
            raise ApiError(503, "feedback needs the prediction store, which is disabled")
        raise ApiError(503, f"the prediction store is unavailable: {s.store_error}")
    try:
        return jsonify(_record_feedback(s, s.store, req)), 200
    except ApiError:
        raise
    except Exception as exc:
        log.exception("store: feedback for %s not saved", req.prediction_id)
        s.metrics.observe_store_error()
        raise ApiError(503, "the prediction store is unavailable; retry later") from exc


def _record_feedback(s: Services, store: PredictionStore, req: FeedbackRequest) -> dict[str, Any]:
    """Score and store feedback once; the same feedback again is acknowledged, not counted."""
    prediction = store.get_prediction(req.prediction_id)
    if prediction is None:
        # another worker may have served it a moment ago and not yet written it
        time.sleep(FEEDBACK_RETRY_SECONDS)
        prediction = store.get_prediction(req.prediction_id)
    if prediction is None:
        raise ApiError(404, f"unknown prediction_id: {req.prediction_id}", "prediction_id")
    previous = store.get_feedback(req.prediction_id)
    if previous is None:
        record = FeedbackRecord(
            prediction_id=req.prediction_id,
            tags=req.tags,
            coverage=coverage(prediction.tags, req.tags),
            jaccard=jaccard(prediction.tags, req.tags),
            n_unknown_tags=sum(1 for t in req.tags if t not in s.vocabulary),
        )
        if store.save_feedback(record):
            s.metrics.observe_feedback(
                record.coverage, record.jaccard, len(record.tags), record.n_unknown_tags
            )
            return {"coverage": record.coverage, "jaccard": record.jaccard}
        previous = store.get_feedback(req.prediction_id)  # another worker won the race
        if previous is None:
            raise StoreError("feedback neither inserted nor found")
    if sorted(previous.tags) != sorted(req.tags):
        raise ApiError(
            409,
            f"prediction {req.prediction_id} already has different feedback: {previous.tags}",
            "tags",
        )
    s.metrics.observe_duplicate_feedback()
    return {"coverage": previous.coverage, "jaccard": previous.jaccard, "duplicate": True}


@bp.get("/predictions/<prediction_id>")
def prediction(prediction_id: str) -> tuple[Response, int]:
    """One stored question with its prediction and feedback: the target of links in emails."""
    s = _services()
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
    elif s.store is not None:
        try:
            s.store.check_writable()
        except StoreError as exc:
            problems.append(f"store: {exc}")
    if problems:
        return jsonify({"status": "not ready", "problems": problems}), 503
    assert s.artefact is not None
    return jsonify({"status": "ready", "model_version": s.artefact.version}), 200


@bp.get("/metrics")
def metrics() -> Response:
    s = _services()
    s.metrics.flush()  # this worker's queued observations; the others flush on their own
    if s.settings.multiproc_dir is not None:
        # under gunicorn each worker writes its own files; totals are summed at read time
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(s.settings.multiproc_dir))
        data = generate_latest(registry)
    else:
        data = generate_latest(s.registry)
    return Response(data, mimetype=CONTENT_TYPE_LATEST)


_ENDPOINT_LABELS = {
    "predictor.predict": "predict",
    "predictor.feedback": "feedback",
    "predictor.prediction": "prediction",
    "predictor.metrics": "metrics",
    "predictor.healthz": "healthz",
    "predictor.readyz": "readyz",
}


def _before() -> None:
    g.t0 = time.perf_counter()


def _after(response: Response) -> Response:
    t0 = g.get("t0")
    if t0 is not None:
        endpoint = _ENDPOINT_LABELS.get(request.endpoint or "", "other")
        _services().metrics.observe_request(
            endpoint, response.status_code, time.perf_counter() - t0
        )
    return response


def _api_error(exc: ApiError) -> tuple[Response, int]:
    if exc.status >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc.message)
    return jsonify(exc.to_json()), exc.status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        message = "request body too large"
    return jsonify({"error": message, "status": status}), status


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify({"error": "internal error", "status": 500}), 500


def _load_services(settings: PredictorSettings, registry: CollectorRegistry) -> Services:
    artefact: Artefact | None = None
    artefact_error = None
    try:
        artefact = load_artefact(settings.models_dir, settings.model_version)
    except ArtefactError as exc:
        artefact_error = str(exc)
        log.error("model not loaded: %s", exc)
    tags = [str(t) for t in artefact.model.classes] if artefact else []
    metrics: PredictorMetrics = NoMetrics()
    if settings.metrics_enabled:
        # under gunicorn, observations are applied in batches (see PredictorMetrics.flush)
        multiprocess = settings.multiproc_dir is not None
        metrics = PredictorMetrics(registry, tags, batch_size=32 if multiprocess else 1)
        if multiprocess:
            metrics.start_flusher(settings.metrics_flush_seconds)
    if artefact is not None:
        metrics.set_model(artefact.card)

    def on_store_error(exc: Exception) -> None:
        log.error("store: write failed, rows kept queued and retried: %s", exc)
        metrics.observe_store_error()

    store: PredictionStore | None = None
    store_error = None
    if settings.store_enabled:
        try:
            store = WriteBehindStore(open_store(settings.store_url), on_error=on_store_error)
            atexit.register(store.close)  # flush queued rows when the worker exits
        except StoreError as exc:
            store_error = str(exc)
            log.error("store not opened: %s", exc)
    else:
        store_error = "disabled"
    return Services(
        settings=settings,
        registry=registry,
        metrics=metrics,
        artefact=artefact,
        artefact_error=artefact_error,
        store=store,
        store_error=store_error,
        vocabulary=frozenset(tags),
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
        app.before_request(_before)
        app.after_request(_after)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app
