"""Experiment tracking: every training logs one MLflow run and registers a model version.

MLflow is imported here only (``import mlflow`` costs ~1.6 s and ~170 MB): training, the
lifecycle and the predictor's supervisor use it; the predictor's workers never do, they load the
local artefact folder that the registry's copy was made from.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tagger.artefact import BASELINE_FILE, CARD_FILE, load_artefact
from tagger.settings import TagwatchSettings
from tagger.tagquality import PER_TAG_FILE

log = logging.getLogger("tagger.tracking")

ARTEFACT_KEY = "artefact"
MODEL_NAME_IN_RUN = "model"


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and the run that made it."""

    version: int
    run_id: str
    artefact_version: str


def configure_mlflow(settings: TagwatchSettings) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; its id.

    A SQLite URI gets its folder created (the embedded default needs no server). HTTP retries
    are capped: an unreachable server must fail in seconds, not after minutes of backoff.
    """
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifacts = Path(settings.mlflow_artifacts_dir).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return str(
        client.create_experiment(settings.mlflow_experiment, artifact_location=artifacts.as_uri())
    )


def git_commit(repo: Path | None = None) -> str:
    """The commit of the code that trained (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo or Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _metric_key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in text)


def card_metrics(card: dict[str, Any]) -> dict[str, float]:
    """Validation figures and the per-period evaluation table as flat MLflow metrics."""
    out = {
        "validation_jaccard": float(card["validation"]["jaccard"]),
        "validation_coverage": float(card["validation"]["coverage"]),
    }
    for row in card.get("periods", []):
        prefix = _metric_key(str(row["period"]))
        for key in ("jaccard", "coverage", "empty_ratio", "unknown_tag_ratio", "rows"):
            if key in row:
                out[f"{prefix}/{key}"] = float(row[key])
    return out


def card_params(card: dict[str, Any]) -> dict[str, Any]:
    """The parameters that made the model (data window, cut-off, k, C, min_df, n-grams, rule)."""
    params = dict(card.get("params", {}))
    return {
        "train_start": card["training_period"]["start"],
        "train_end": card["training_period"]["end"],
        "cutoff": card["training_period"].get("cutoff", ""),
        "validation_start": card["validation_period"]["start"],
        "validation_end": card["validation_period"]["end"],
        "k": card["k"],
        "C": params.get("C"),
        "min_df": params.get("min_df"),
        "ngram_range": f"1-{params.get('ngram_max')}",
        "decision_threshold": card["decision_rule"]["threshold"],
        "max_tags": card["decision_rule"].get("max_tags"),
        "rows_train": card["rows"]["train"],
        "rows_validation": card["rows"]["validation"],
    }


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    base: Any = mlflow.pyfunc.PythonModel

    class TagwatchModel(base):
        """The served model as an MLflow pyfunc: titles (and bodies) in, tags out."""

        def load_context(self, context: Any) -> None:
            folder = Path(context.artifacts[ARTEFACT_KEY])
            self.artefact = load_artefact(folder.parent, folder.name)

        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
            bodies = model_input["body"] if "body" in model_input else [""] * len(model_input)
            tags = [
                " ".join(self.artefact.model.analyse(str(t), str(b or "")).tags)
                for t, b in zip(model_input["title"], bodies, strict=True)
            ]
            return pd.DataFrame({"tags": tags})

    return TagwatchModel


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "numpy", "scipy", "pandas", "joblib")]


def _log_model(artefact_dir: Path, settings: TagwatchSettings, example: pd.DataFrame) -> Any:
    """Log the artefact as a pyfunc model with a signature and an input example, registered."""
    import mlflow
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        # the artefact folder under its own version name: the registry cache keeps that name
        stage = Path(tmp) / artefact_dir.name
        stage.mkdir()
        for f in artefact_dir.iterdir():
            if f.is_file():
                (stage / f.name).write_bytes(f.read_bytes())
        model = _pyfunc_class()()
        model.artefact = load_artefact(artefact_dir.parent, artefact_dir.name)
        signature = infer_signature(example, model.predict(None, example))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=model,
            artifacts={ARTEFACT_KEY: str(stage)},
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=settings.registered_model,
        )


def log_training(
    settings: TagwatchSettings,
    artefact_dir: Path,
    *,
    run_name: str,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    evaluation_df: pd.DataFrame | None = None,
    per_tag: pd.DataFrame | None = None,
) -> RegisteredVersion:
    """One MLflow run for one trained artefact; the model registered as a new version."""
    import mlflow
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(settings)
    artefact_dir = Path(artefact_dir)
    card = json.loads((artefact_dir / CARD_FILE).read_text())
    example = (
        evaluation_df[["title", "body"]].head(3).reset_index(drop=True)
        if evaluation_df is not None and len(evaluation_df)
        else pd.DataFrame({"title": ["How do I sort a list in python?"], "body": [""]})
    )
    run_tags = {
        "git_commit": git_commit(),
        "data_sha256": str(card.get("data", {}).get("sha256", "")),
        "artefact_version": str(card["version"]),
        **(tags or {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({**card_params(card), **(params or {})})
        mlflow.log_metrics(card_metrics(card))
        mlflow.set_tags(run_tags)
        mlflow.log_artifact(str(artefact_dir / CARD_FILE))
        mlflow.log_artifact(str(artefact_dir / BASELINE_FILE))
        if per_tag is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / PER_TAG_FILE
                per_tag.to_csv(path, index=False)
                mlflow.log_artifact(str(path))
        info = _log_model(artefact_dir, settings, example)
        run_id = run.info.run_id
    version = int(info.registered_model_version)
    client = MlflowClient()
    client.set_model_version_tag(
        settings.registered_model, str(version), "artefact_version", str(card["version"])
    )
    client.set_model_version_tag(
        settings.registered_model,
        str(version),
        "validation_jaccard",
        str(card["validation"]["jaccard"]),
    )
    log.info("MLflow run %s registered %s version %d", run_id, settings.registered_model, version)
    return RegisteredVersion(version=version, run_id=run_id, artefact_version=str(card["version"]))
