"""The reference for benchmarks/predictor.py: Flask returning constant JSON, nothing else."""

from __future__ import annotations

from flask import Flask, jsonify


def create_app() -> Flask:
    app = Flask("bare")
    payload = {"prediction_id": "0" * 32, "tags": ["python"], "scores": {"python": 0.9},
               "model_version": "bare"}  # fmt: skip

    @app.post("/predict")
    def predict():  # type: ignore[no-untyped-def]
        return jsonify(payload)

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify({"status": "ok"})

    return app
