"""The model registry (MLflow): which version is champion, and a local cache of its artefact.

The predictor's workers never talk to MLflow: the alias ``champion`` is resolved here, the
version's artefact folder copied into ``models/<artefact_version>/`` and ``models/LATEST``
pointed at it. When MLflow cannot be reached, the folder and pointer already there are the
cached champion, still served.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger.artefact import MODEL_FILE, read_pointer, write_pointer
from tagger.settings import TagwatchSettings
from tagger.tracking import ARTEFACT_KEY, MODEL_NAME_IN_RUN, configure_mlflow

log = logging.getLogger("lifecycle.registry")


class RegistryError(RuntimeError):
    """MLflow cannot be reached, or the version asked for does not exist (the message says)."""


@dataclass(frozen=True)
class ModelRef:
    """One registered version of the model."""

    version: int
    artefact_version: str
    run_id: str
    aliases: list[str] = field(default_factory=list)
    created_at: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _ref(mv: Any) -> ModelRef:
    tags = dict(mv.tags or {})
    return ModelRef(
        version=int(mv.version),
        artefact_version=tags.get("artefact_version", f"v{mv.version}"),
        run_id=str(mv.run_id or ""),
        aliases=list(getattr(mv, "aliases", []) or []),
        created_at=(mv.creation_timestamp or 0) / 1000.0,
        tags=tags,
    )


class Registry:
    """The registered model ``settings.registered_model`` and its champion alias."""

    def __init__(self, settings: TagwatchSettings) -> None:
        self.settings = settings
        self.name = settings.registered_model
        self.alias = settings.champion_alias
        try:
            self.experiment_id = configure_mlflow(settings)
            from mlflow import MlflowClient

            self.client = MlflowClient()
        except Exception as exc:  # sqlalchemy, HTTP and MLflow errors all mean "unreachable"
            raise RegistryError(
                f"MLflow at {settings.mlflow_tracking_uri} unreachable: {_short(exc)}"
            ) from exc

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise RegistryError(f"{what}: {_short(exc)}") from exc

    def champion(self) -> ModelRef | None:
        """The version the alias names; None when nothing was registered or promoted yet."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise RegistryError(f"champion of {self.name}: {_short(exc)}") from exc
        except Exception as exc:
            raise RegistryError(f"champion of {self.name}: {_short(exc)}") from exc
        return _ref(mv)

    def get(self, version: int) -> ModelRef:
        from mlflow.exceptions import MlflowException

        try:
            return _ref(self.client.get_model_version(self.name, str(version)))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"{self.name} has no version {version}") from exc
            raise RegistryError(f"version {version} of {self.name}: {_short(exc)}") from exc
        except Exception as exc:
            raise RegistryError(f"version {version} of {self.name}: {_short(exc)}") from exc

    def versions(self) -> list[ModelRef]:
        found = self._call(
            "listing versions", self.client.search_model_versions, f"name='{self.name}'"
        )
        # search results do not carry aliases: read each version (a handful)
        return sorted((self.get(int(mv.version)) for mv in found), key=lambda r: r.version)

    def promote(self, version: int, reason: str, actor: str | None = None) -> ModelRef | None:
        """Point the champion alias at ``version``; returns the previous champion.

        Who and why are kept on the version (tags) and as an MLflow run of the experiment, so
        the history of promotions and rollbacks is in the UI.
        """
        if not reason.strip():
            raise RegistryError("a promotion needs a reason")
        target = self.get(version)
        previous = self.champion()
        actor = actor or default_actor()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._call(
            "setting the alias",
            self.client.set_registered_model_alias,
            self.name,
            self.alias,
            str(version),
        )
        for key, value in {
            "promoted_by": actor,
            "promoted_reason": reason,
            "promoted_at": now,
        }.items():
            self._call(
                "tagging", self.client.set_model_version_tag, self.name, str(version), key, value
            )
        self._log_promotion(target, previous, actor, reason)
        log.info(
            "%s@%s: version %s -> %d by %s (%s)",
            self.name,
            self.alias,
            previous.version if previous else "none",
            version,
            actor,
            reason,
        )
        return previous

    def _log_promotion(
        self, target: ModelRef, previous: ModelRef | None, actor: str, reason: str
    ) -> None:
        kind = "rollback" if previous and target.version < previous.version else "promotion"
        run = self._call(
            "logging the promotion",
            self.client.create_run,
            self.experiment_id,
            None,
            {
                "kind": "promote",
                "decision": kind,
                "reason": reason,
                "actor": actor,
                "mlflow.runName": f"promote v{target.version}",
            },
        )
        rid = run.info.run_id
        self.client.log_param(rid, "to_version", target.version)
        self.client.log_param(rid, "from_version", previous.version if previous else "none")
        self.client.log_param(rid, "artefact_version", target.artefact_version)
        self.client.set_terminated(rid)

    def fetch(self, ref: ModelRef, models_dir: Path) -> Path:
        """The local artefact folder of ``ref`` (downloaded once; atomic rename into place)."""
        models_dir = Path(models_dir)
        out = models_dir / ref.artefact_version
        if (out / MODEL_FILE).is_file():
            return out
        import mlflow.artifacts

        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp:
            uri = f"runs:/{ref.run_id}/{MODEL_NAME_IN_RUN}/artifacts/{ARTEFACT_KEY}"
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            except Exception:
                # logged models of MLflow 3 live under the model id, reachable by models:/ URI
                try:
                    root = mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{self.name}/{ref.version}", dst_path=tmp
                    )
                except Exception as exc:
                    raise RegistryError(
                        f"downloading version {ref.version}: {_short(exc)}"
                    ) from exc
                local = _find_artefact(Path(root))
            if not (local / MODEL_FILE).is_file():
                local = _find_artefact(local)
            if out.exists():  # a partial folder from an interrupted copy
                shutil.rmtree(out)
            os.replace(local, out)
        return out


def _find_artefact(root: Path) -> Path:
    for found in root.rglob(MODEL_FILE):
        return found.parent
    raise RegistryError(f"{root}: the registered model has no {MODEL_FILE}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def sync_champion(settings: TagwatchSettings, models_dir: Path) -> ModelRef | None:
    """Make ``models_dir/LATEST`` name the registry's champion (fetched if needed).

    Returns the champion, or None when no version is champion yet (the pointer is left as it
    is). Raises :class:`RegistryError` when MLflow cannot be reached: callers keep serving
    the cached champion.
    """
    registry = Registry(settings)
    ref = registry.champion()
    if ref is None:
        return None
    registry.fetch(ref, models_dir)
    if read_pointer(models_dir) != ref.artefact_version:
        write_pointer(models_dir, ref.artefact_version)
        log.info("champion is version %d (%s)", ref.version, ref.artefact_version)
    return ref
