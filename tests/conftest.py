"""Fixtures shared by every test package: the real data, a trained model, free ports."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tagger.settings import TagwatchSettings
from tagger.train import TrainConfig, train
from tests.processes import PostgresServer, start_postgres

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every process a test starts gets a throwaway MLflow and does not follow a registry.

    Without this a predictor started with a partial environment would resolve the champion of
    the repository's own ``var/mlflow`` (the defaults are relative to the working directory)
    and rewrite the shared test model's ``LATEST``. Tests of the registry set their own URI
    and ``TAGWATCH_FOLLOW_REGISTRY=true``.
    """
    root = tmp_path_factory.mktemp("mlflow-default")
    defaults = {
        "TAGWATCH_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
        "TAGWATCH_FOLLOW_REGISTRY": "false",
    }
    saved = {k: os.environ.get(k) for k in defaults}
    os.environ.update(defaults)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tagwatch_settings() -> TagwatchSettings:
    """Settings pointing at ../shared/data beside the repository (or TAGWATCH_DATA_DIR)."""
    settings = TagwatchSettings()
    if not settings.data_dir.is_absolute():
        settings = TagwatchSettings(data_dir=(REPO_ROOT / settings.data_dir).resolve())
    if not settings.titles_path.is_file():
        pytest.fail(f"real data not found at {settings.titles_path} (set TAGWATCH_DATA_DIR)")
    return settings


@pytest.fixture(scope="session")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, tagwatch_settings: TagwatchSettings
) -> Path:
    """The default model (2008–2011, K=100) trained once per test session (~15 s).

    Trained on the full pre-2012 data, not a subset: the drift tests need the real baseline.
    """
    out = tmp_path_factory.mktemp("models")
    train(
        TrainConfig(
            data_path=tagwatch_settings.titles_path, output_dir=out, version="test", progress=False
        )
    )
    return out


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a TCP port free on 127.0.0.1 right now."""

    def _free() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    return _free


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster per test session (Debian's postgresql-15 binaries)."""
    try:
        _, server = start_postgres()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for one test; its URL (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    with contextlib.suppress(Exception):
        postgres_server.drop_database(name)
