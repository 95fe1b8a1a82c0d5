"""``python -m lifecycle register``: a model that exists only on disk enters the registry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lifecycle.registry import Registry
from tagger.artefact import read_pointer
from tagger.settings import TagwatchSettings
from tests.processes import REPO_ROOT


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", "register", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_register_existing_model_becomes_champion_unchanged(
    tmp_path: Path, models_dir: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    before = read_pointer(models)
    env = {
        "PATH": "/usr/bin:/bin",
        "TAGWATCH_MODELS_DIR": str(models),
        "TAGWATCH_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    first = _run(env)
    assert first.returncode == 0, first.stderr
    assert f"registered {before} as tagwatch version 1, now champion" in first.stdout
    settings = TagwatchSettings(
        models_dir=models,
        mlflow_tracking_uri=env["TAGWATCH_MLFLOW_TRACKING_URI"],
        mlflow_artifacts_dir=tmp_path / "artifacts",
    )
    champion = Registry(settings).champion()
    assert champion is not None and champion.artefact_version == before
    assert read_pointer(models) == before  # the served model did not change

    # again: a second version, the champion stays; a bad folder changes nothing
    second = _run(env)
    assert (
        second.returncode == 0 and "version 2" in second.stdout and "champion" not in second.stdout
    )
    bad = _run(env, "--model-version", "nope")
    assert bad.returncode == 2 and "--model-version" in bad.stderr
    assert [v.version for v in Registry(settings).versions()] == [1, 2]
