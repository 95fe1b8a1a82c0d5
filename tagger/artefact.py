"""Model artefacts: ``models/<version>/`` with the model, its card and its drift baseline.

``models/LATEST`` names the version to serve; it is replaced atomically so a reader never sees
a half-written artefact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from tagger.columns import FEATURE_COLUMNS
from tagger.model import TagModel
from tagger.tagquality import PER_TAG_COLUMNS, PER_TAG_FILE

MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"
BASELINE_FILE = "baseline.csv"
CANARY_FILE = "canary.csv"  # trusted questions with their true tags (the gate's anchor)
LATEST_FILE = "LATEST"


class ArtefactError(RuntimeError):
    """A model artefact is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class Artefact:
    path: Path
    model: TagModel
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.card["version"])


def write_artefact(
    models_dir: Path,
    version: str,
    model: TagModel,
    card: dict[str, Any],
    baseline: pd.DataFrame,
    set_latest: bool = True,
    canary: pd.DataFrame | None = None,
    per_tag: pd.DataFrame | None = None,
) -> Path:
    """Write the artefact folder; ``per_tag`` is the model's per-tag baseline table
    (:func:`tagger.tagquality.baseline_table`), what live per-tag feedback is compared with."""
    out = Path(models_dir) / version
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / MODEL_FILE, compress=3)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
    baseline.to_csv(out / BASELINE_FILE, index=False)
    if canary is not None and len(canary):
        rows = canary.loc[:, ["created_at", "title", "body", "tags"]]
        rows.assign(tags=[" ".join(t) for t in rows["tags"]]).to_csv(out / CANARY_FILE, index=False)
    if per_tag is not None:
        per_tag.loc[:, list(PER_TAG_COLUMNS)].to_csv(out / PER_TAG_FILE, index=False)
    if set_latest:
        write_pointer(models_dir, version)
    return out


def write_pointer(models_dir: Path, version: str) -> None:
    """Point ``models/LATEST`` at ``version`` atomically (readers never see half a name)."""
    tmp = Path(models_dir) / f".{LATEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, Path(models_dir) / LATEST_FILE)


def read_pointer(models_dir: Path) -> str | None:
    """The version ``models/LATEST`` names, or None when there is none."""
    try:
        return (Path(models_dir) / LATEST_FILE).read_text().strip() or None
    except OSError:
        return None


def resolve_version(models_dir: Path, version: str = "latest") -> Path:
    """The artefact folder of ``version`` ("latest" follows ``models/LATEST``)."""
    models_dir = Path(models_dir)
    if version == "latest":
        pointer = models_dir / LATEST_FILE
        if not pointer.is_file():
            raise ArtefactError(f"{pointer}: no model trained yet (run python -m tagger.train)")
        version = pointer.read_text().strip()
    path = models_dir / version
    if not (path / MODEL_FILE).is_file():
        raise ArtefactError(f"{path / MODEL_FILE}: no such model file")
    return path


def read_card(path: Path) -> dict[str, Any]:
    card_path = Path(path) / CARD_FILE
    try:
        card: dict[str, Any] = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{card_path}: unreadable model card ({exc})") from exc
    return card


def load_artefact(models_dir: Path, version: str = "latest") -> Artefact:
    path = resolve_version(models_dir, version)
    try:
        model = joblib.load(path / MODEL_FILE)
    except Exception as exc:  # a truncated or foreign pickle raises many kinds of errors
        raise ArtefactError(f"{path / MODEL_FILE}: cannot load model ({exc})") from exc
    if not isinstance(model, TagModel):
        raise ArtefactError(f"{path / MODEL_FILE}: not a tagwatch model")
    return Artefact(path=path, model=model, card=read_card(path))


# a question every model must answer before it serves or becomes champion
CHECK_QUESTION = "How do I sort a list of dictionaries by a value in Python?"


def check_artefact(models_dir: Path, version: str) -> Artefact:
    """Load ``version`` and score one question: what serving it needs, checked before it serves
    (exporter.supervisor's preflight) or becomes champion (``lifecycle promote``).

    Raises :class:`ArtefactError` naming the file and what failed.
    """
    artefact = load_artefact(models_dir, version)
    try:
        artefact.model.analyse(CHECK_QUESTION, "")
    except Exception as exc:  # a model that loads but cannot score is as broken
        raise ArtefactError(
            f"{artefact.path / MODEL_FILE}: loads but cannot score a question "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return artefact


def load_baseline(path: Path) -> pd.DataFrame:
    """The baseline feature table of an artefact; errors name the file and what is wrong."""
    file = Path(path) / BASELINE_FILE if Path(path).is_dir() else Path(path)
    try:
        table = pd.read_csv(file, parse_dates=["created_at"])
    except Exception as exc:
        raise ArtefactError(f"{file}: unreadable baseline ({exc})") from exc
    missing = [c for c in FEATURE_COLUMNS if c not in table.columns]
    if missing:
        raise ArtefactError(f"{file}: baseline lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise ArtefactError(f"{file}: baseline has no rows")
    return table


def load_canary(path: Path) -> pd.DataFrame | None:
    """The canary set of an artefact folder (tags as lists), or None when it has none (an
    artefact written before canaries existed)."""
    file = Path(path) / CANARY_FILE
    if not file.is_file():
        return None
    try:
        table = pd.read_csv(file, dtype={"title": str, "body": str, "tags": str})
    except Exception as exc:
        raise ArtefactError(f"{file}: unreadable canary set ({exc})") from exc
    missing = [c for c in ("created_at", "title", "tags") if c not in table.columns]
    if missing:
        raise ArtefactError(f"{file}: canary set lacks column(s) {', '.join(missing)}")
    table["created_at"] = pd.to_datetime(table["created_at"], utc=True, format="ISO8601")
    table["title"] = table["title"].fillna("").astype(object)
    table["body"] = table.get("body", pd.Series("", index=table.index)).fillna("").astype(object)
    table["tags"] = table["tags"].fillna("").str.split()
    return table


def load_per_tag(path: Path) -> pd.DataFrame | None:
    """The per-tag baseline table of an artefact folder, or None when it has none (an artefact
    written before per-tag baselines existed keeps serving, without per-tag baselines)."""
    file = Path(path) / PER_TAG_FILE
    if not file.is_file():
        return None
    try:
        table = pd.read_csv(file, dtype={"tag": str}, keep_default_na=False)
    except Exception as exc:
        raise ArtefactError(f"{file}: unreadable per-tag table ({exc})") from exc
    missing = [c for c in PER_TAG_COLUMNS if c not in table.columns]
    if missing:
        raise ArtefactError(f"{file}: per-tag table lacks column(s) {', '.join(missing)}")
    return table
