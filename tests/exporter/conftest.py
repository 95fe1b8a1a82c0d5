from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from exporter.app import create_app
from exporter.settings import PredictorSettings
from tests.processes import FEEDBACK_AUTH, ID_SECRET, write_secrets

API_TOKEN = "test-api-token-0123456789"
LINK_SECRET = "test-link-secret-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FEEDBACK = FEEDBACK_AUTH  # POST /feedback's credential (the default: token mode)
ID_KEY = ID_SECRET.encode()  # mints ids this predictor accepts: new_prediction_id(ID_KEY)


@pytest.fixture
def predictor_settings(models_dir: Path, tmp_path: Path) -> PredictorSettings:
    (tmp_path / "api_token").write_text(API_TOKEN + "\n")
    (tmp_path / "link_secret").write_text(LINK_SECRET)
    secrets = write_secrets(tmp_path / "secrets")
    return PredictorSettings(
        models_dir=models_dir,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        api_token_file=tmp_path / "api_token",
        link_secret_file=tmp_path / "link_secret",
        feedback_token_file=Path(secrets["TAGWATCH_FEEDBACK_TOKEN_FILE"]),
        id_secret_file=Path(secrets["TAGWATCH_ID_SECRET_FILE"]),
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def close_app(app: Flask) -> None:
    """Stop an app's store writer, so that no thread outlives its test."""
    writer = app.extensions["tagwatch"].writer
    if writer is not None:
        writer.close()


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """``create_app`` whose apps are closed when the test ends."""
    apps: list[Flask] = []

    def make(settings: PredictorSettings, registry: CollectorRegistry | None = None) -> Flask:
        apps.append(create_app(settings, registry if registry is not None else CollectorRegistry()))
        return apps[-1]

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def app(
    predictor_settings: PredictorSettings,
    registry: CollectorRegistry,
    make_app: Callable[..., Flask],
) -> Flask:
    return make_app(predictor_settings, registry)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def metric(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value (0.0 when absent)."""
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
