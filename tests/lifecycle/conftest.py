"""Shared fixtures of the lifecycle tests: small real models, a real MLflow registry (SQLite).

Add fixtures here; do not rewrite the ones others use.

- ``small_artefacts``: two real models (2008–2011 titles, the last 4,000 training questions,
  K = 20 and K = 30) written once per session as ``artefacts/<version>/``; ~10 s.
- ``two_versions``: an MLflow tracking + registry store (SQLite) in a session folder with both
  artefacts registered as versions 1 and 2 of ``tagwatch``; version 1 is champion.
- ``registry_settings``: settings pointing at that store, with the alias reset to version 1
  before each test (tests promote and roll back).
- ``serving_env``: the environment that makes ``python -m exporter serve`` follow it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from lifecycle.settings import LifecycleSettings
from tagger.settings import TagwatchSettings
from tagger.train import train_variants

SMALL_TRAIN_ROWS = 4000


@dataclass(frozen=True)
class TwoVersions:
    settings: TagwatchSettings
    artefacts: dict[int, str]  # registry version -> artefact version
    mlflow_dir: Path


@pytest.fixture(scope="session")
def small_artefacts(
    tmp_path_factory: pytest.TempPathFactory, tagwatch_settings: TagwatchSettings
) -> dict[str, Path]:
    """Two small real models (``small-k20``, ``small-k30``) in one folder, no LATEST."""
    out = tmp_path_factory.mktemp("artefacts")
    return train_variants(tagwatch_settings.titles_path, out, (20, 30), SMALL_TRAIN_ROWS,
                          validation_tail=1500, prefix="small-k")  # fmt: skip


def mlflow_settings(root: Path, **extra: object) -> TagwatchSettings:
    return TagwatchSettings(
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "artifacts",
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def two_versions(
    tmp_path_factory: pytest.TempPathFactory, small_artefacts: dict[str, Path]
) -> TwoVersions:
    """Versions 1 (K=20) and 2 (K=30) of ``tagwatch`` in a real SQLite-backed MLflow."""
    from lifecycle.registry import Registry
    from tagger.tracking import log_training

    root = tmp_path_factory.mktemp("mlflow")
    settings = mlflow_settings(root)
    artefacts = {}
    for path in small_artefacts.values():
        registered = log_training(
            settings, path, run_name=f"test {path.name}", tags={"kind": "test"}
        )
        artefacts[registered.version] = registered.artefact_version
    assert sorted(artefacts) == [1, 2]
    Registry(settings).promote(1, reason="test fixture", actor="pytest")
    return TwoVersions(settings=settings, artefacts=artefacts, mlflow_dir=root)


@pytest.fixture
def registry_settings(two_versions: TwoVersions) -> TagwatchSettings:
    """The two-version registry with version 1 champion again (a test may have moved it)."""
    from lifecycle.registry import Registry

    registry = Registry(two_versions.settings)
    champion = registry.champion()
    if champion is None or champion.version != 1:
        registry.client.set_registered_model_alias(
            two_versions.settings.registered_model, two_versions.settings.champion_alias, "1"
        )
    return two_versions.settings


def serving_env(settings: TagwatchSettings, poll_seconds: float = 1.0) -> dict[str, str]:
    """Settings for ``start_predictor(**env)``: follow this registry, poll every second."""
    return {
        "TAGWATCH_FOLLOW_REGISTRY": "true",
        "TAGWATCH_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(settings.mlflow_artifacts_dir),
        "TAGWATCH_MODEL_POLL_SECONDS": str(poll_seconds),
        "TAGWATCH_LOG_LEVEL": "INFO",
    }


def cache_artefact(source: Path, models_dir: Path, set_latest: bool = True) -> Path:
    """Copy an artefact folder into a models cache (and point LATEST at it)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    out = models_dir / source.name
    shutil.copytree(source, out, dirs_exist_ok=True)
    if set_latest:
        (models_dir / "LATEST").write_text(source.name + "\n")
    return out


# --- retraining (helper "retrain"): the real 2011 champion in its own registry, a filled store


@dataclass(frozen=True)
class RetrainEnv:
    settings: LifecycleSettings
    env: dict[str, str]  # the same settings for a ``python -m lifecycle`` process
    root: Path


def lifecycle_env(root: Path, data_dir: Path, **extra: str) -> RetrainEnv:
    """Settings (and their environment) with every path under ``root``."""
    env = {
        "TAGWATCH_DATA_DIR": str(data_dir),
        "TAGWATCH_MODELS_DIR": str(root / "models"),
        "TAGWATCH_STORE_URL": f"sqlite:///{root / 'store.sqlite3'}",
        "TAGWATCH_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
        **extra,
    }
    settings = LifecycleSettings(
        **{k.removeprefix("TAGWATCH_").lower(): v for k, v in env.items()}  # type: ignore[arg-type]
    )
    return RetrainEnv(settings=settings, env=env, root=root)


@pytest.fixture
def champion_2011(
    tmp_path: Path, models_dir: Path, tagwatch_settings: TagwatchSettings
) -> RetrainEnv:
    """A fresh registry whose champion (version 1) is the default 2008–2011 model (~5 s)."""
    from lifecycle.registry import Registry
    from tagger.tracking import log_training

    rt = lifecycle_env(tmp_path / "lc", tagwatch_settings.data_dir)
    cached = cache_artefact(models_dir / "test", rt.settings.models_dir)
    registered = log_training(rt.settings, cached, run_name="champion 2011", tags={"kind": "test"})
    Registry(rt.settings).promote(registered.version, reason="test fixture", actor="pytest")
    return rt


def fill_store(
    store_url: str,
    model_dir: Path,
    questions: pd.DataFrame,
    start: float,
    seconds_apart: float = 60.0,
) -> int:
    """Serve ``questions`` with the model at ``model_dir`` straight into the store, with their
    real tags as feedback, ``seconds_apart`` from ``start`` on (for tests of the retrain itself;
    the acceptance test goes through the real predictor instead)."""
    from store import FeedbackRecord, PredictionRecord, new_prediction_id, open_store
    from tagger.artefact import load_artefact
    from tagger.metrics import coverage, jaccard

    artefact = load_artefact(model_dir.parent, model_dir.name)
    store = open_store(store_url)
    records, feedback = [], []
    for i, (title, tags) in enumerate(zip(questions["title"], questions["tags"], strict=True)):
        a = artefact.model.analyse(title, "")
        pid, t = new_prediction_id(), start + i * seconds_apart
        records.append(
            PredictionRecord(pid, t, title, "", a.tags, {}, 0.0, artefact.version, a.features)
        )
        feedback.append(
            FeedbackRecord(pid, list(tags), coverage(a.tags, tags), jaccard(a.tags, tags), 0, t)
        )
    store.save_predictions(records)
    for f in feedback:
        store.save_feedback(f)
    store.close()
    return len(records)
