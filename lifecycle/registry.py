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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger.artefact import MODEL_FILE, check_artefact, read_pointer, write_pointer
from tagger.data import sha256_of
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
        if previous is not None and previous.version == target.version:
            kind = "promotion again"  # predictors that refused it retry (exporter/supervisor.py)
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

    def previous_champions(self) -> list[ModelRef]:
        """Versions that were champion once, the most recently promoted first: where a predictor
        falls back when the champion does not load (challengers never promoted are not here)."""
        promoted = [r for r in self.versions() if r.tags.get("promoted_at")]
        return sorted(promoted, key=lambda r: (r.tags["promoted_at"], r.version), reverse=True)

    def fetch(self, ref: ModelRef, models_dir: Path, refresh: bool = False) -> Path:
        """The local artefact folder of ``ref`` (downloaded once; atomic rename into place).

        ``refresh``: download it again and replace a cached copy that differs from the
        registry's (a cached copy that does not load may be a damaged copy of a good version).
        """
        models_dir = Path(models_dir)
        out = models_dir / ref.artefact_version
        if (out / MODEL_FILE).is_file() and not refresh:
            return out
        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp:
            local = self._download(ref, Path(tmp))
            if (out / MODEL_FILE).is_file():
                if sha256_of(out / MODEL_FILE) == sha256_of(local / MODEL_FILE):
                    return out
                log.warning(
                    "%s differs from version %d in the registry: replaced", out, ref.version
                )
                os.replace(out, Path(tmp) / "replaced")  # removed with the temporary folder
            elif out.exists():  # a partial folder from an interrupted copy
                shutil.rmtree(out)
            os.replace(local, out)
        return out

    def _download(self, ref: ModelRef, into: Path) -> Path:
        """The artefact folder of ``ref`` downloaded under ``into``."""
        import mlflow.artifacts

        uri = f"runs:/{ref.run_id}/{MODEL_NAME_IN_RUN}/artifacts/{ARTEFACT_KEY}"
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
        except Exception:
            # logged models of MLflow 3 live under the model id, reachable by models:/ URI
            try:
                root = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{ref.version}", dst_path=str(into)
                )
            except Exception as exc:
                raise RegistryError(f"downloading version {ref.version}: {_short(exc)}") from exc
            local = _find_artefact(Path(root))
        if not (local / MODEL_FILE).is_file():
            local = _find_artefact(local)
        return local

    def check(self, ref: ModelRef) -> None:
        """Download ``ref`` as a predictor would and load it and score a question.

        Raises :class:`tagger.artefact.ArtefactError` (it does not load: the message says why)
        or :class:`RegistryError` (it cannot be downloaded).
        """
        with tempfile.TemporaryDirectory(prefix="tagwatch-check-") as tmp:
            local = self._download(ref, Path(tmp))
            check_artefact(local.parent, local.name)


def _find_artefact(root: Path) -> Path:
    for found in root.rglob(MODEL_FILE):
        return found.parent
    raise RegistryError(f"{root}: the registered model has no {MODEL_FILE}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def promotion_stamp(ref: ModelRef) -> str:
    """Changes each time ``ref`` is promoted, again or not: a predictor that refused it tries
    it again then."""
    return f"{ref.version}@{ref.tags.get('promoted_at', '')}"


def sync_champion(
    settings: TagwatchSettings, models_dir: Path, refresh: Callable[[ModelRef], bool] | None = None
) -> ModelRef | None:
    """Make ``models_dir/LATEST`` name the registry's champion (fetched if needed).

    Returns the champion, or None when no version is champion yet (the pointer is left as it
    is). Raises :class:`RegistryError` when MLflow cannot be reached: callers keep serving
    the cached champion. ``refresh(champion)`` true: its cached copy is checked against the
    registry's (:meth:`Registry.fetch`).

    The pointer is written only when it differs from the champion, never to anything else:
    predictors sharing ``models_dir`` all write the same name, once (a predictor that refuses
    the champion says so in its own status, not in the shared pointer).
    """
    registry = Registry(settings)
    ref = registry.champion()
    if ref is None:
        return None
    registry.fetch(ref, models_dir, refresh=refresh is not None and refresh(ref))
    if read_pointer(models_dir) != ref.artefact_version:
        write_pointer(models_dir, ref.artefact_version)
        log.info("champion is version %d (%s)", ref.version, ref.artefact_version)
    return ref


def cached_previous_champions(
    settings: TagwatchSettings, models_dir: Path, exclude: str, limit: int = 3
) -> list[ModelRef]:
    """Up to ``limit`` versions that were champion before (newest promotion first, not the
    artefact ``exclude``), each in the local cache (fetched if needed; one that cannot be
    fetched is skipped): the fallbacks of a predictor whose champion does not load."""
    registry = Registry(settings)
    out: list[ModelRef] = []
    for ref in registry.previous_champions():
        if ref.artefact_version == exclude or len(out) >= limit:
            continue
        try:
            registry.fetch(ref, models_dir)
        except RegistryError as exc:
            log.warning("previous champion %d not fetched: %s", ref.version, exc)
            continue
        out.append(ref)
    return out
