"""Settings shared by every tagwatch process (``TAGWATCH_`` environment prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TagwatchSettings(BaseSettings):
    """Where data and models live. Entry points build one and pass it down."""

    model_config = SettingsConfigDict(env_prefix="TAGWATCH_", extra="ignore")

    data_dir: Path = Path("../shared/data")
    models_dir: Path = Path("models")
    titles_file: str = "stackoverflow_titles_2008_2020.csv.gz"
    bodies_file: str = "stackoverflow_bodies_sample.csv.gz"
    # MLflow: embedded SQLite tracking + registry by default, a remote server by URI
    mlflow_tracking_uri: str = "sqlite:///var/mlflow/mlflow.db"
    mlflow_artifacts_dir: Path = Path("var/mlflow/artifacts")
    mlflow_experiment: str = "tagwatch"
    registered_model: str = "tagwatch"
    champion_alias: str = "champion"
    # retention (store/retention.py): raw question text (title, body, url) and dated reports;
    # rows with their features and feedback (drift job, weekly report). 0 = keep forever
    retention_days: float = Field(default=90, ge=0)
    feature_retention_days: float = Field(default=400, ge=0)

    @property
    def titles_path(self) -> Path:
        return self.data_dir / self.titles_file

    @property
    def bodies_path(self) -> Path:
        return self.data_dir / self.bodies_file
