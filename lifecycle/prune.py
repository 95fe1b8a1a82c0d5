"""Bounded artefacts: every retrain registers a version (~4 MB of model files, twice: the local
cache in ``models/`` and MLflow's artefact store); nothing else ever deletes them.

Kept: the champion, the previous champion (a rollback's target), the version ``models/LATEST``
names (what the predictors load at start), and the newest ``TAGWATCH_KEEP_CHALLENGERS`` other
versions. Every other version loses its model files in ``models/`` and in MLflow's artefact store
(its run, metrics, params, tags, model card and gate decision stay), and is archived in the
registry (stage ``Archived``, tags ``pruned_at`` and ``pruned_reason``): a pruned version cannot
be promoted again (``lifecycle promote`` loads the artefact first and refuses).

Runs after each retrain that reached a decision (under the retrain lock: no retrain writes a
challenger meanwhile) and as ``python -m lifecycle prune``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.settings import LifecycleSettings
from store import StoreError

if TYPE_CHECKING:
    from lifecycle.metrics import LifecycleMetrics
    from lifecycle.registry import ModelRef, Registry

log = logging.getLogger("lifecycle.prune")

PRUNED_TAG = "pruned_at"


@dataclass(frozen=True)
class PrunePlan:
    """Which versions keep their artefacts (and why), which lose them."""

    keep: dict[int, str]
    prune: list[int]


def plan(
    versions: list[int],
    champion: int | None,
    previous: int | None,
    latest: int | None,
    keep_challengers: int,
) -> PrunePlan:
    """Keep the champion, the previous champion, what models/LATEST names and the newest
    ``keep_challengers`` others; prune the rest."""
    keep: dict[int, str] = {}
    for version, why in ((champion, "champion"), (previous, "previous champion"),
                         (latest, "named by models/LATEST")):  # fmt: skip
        if version is not None and version in versions:
            keep.setdefault(version, why)
    others = sorted((v for v in versions if v not in keep), reverse=True)
    for v in others[:keep_challengers]:
        keep[v] = f"one of the {keep_challengers} newest"
    return PrunePlan(keep=keep, prune=sorted(v for v in others if v not in keep))


@dataclass
class PruneReport:
    kept: dict[int, str] = field(default_factory=dict)
    pruned: list[int] = field(default_factory=list)
    freed_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        kept = ", ".join(f"v{v} ({why})" for v, why in sorted(self.kept.items()))
        pruned = ", ".join(f"v{v}" for v in self.pruned) or "none"
        freed = f"{self.freed_bytes / 1e6:.1f} MB"
        text = f"prune: kept {kept or 'none'}; pruned {pruned}; freed {freed}"
        return text + (f"; errors: {'; '.join(self.errors)}" if self.errors else "")


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def previous_champion(registry: Registry, champion: int | None) -> int | None:
    """The version that was champion before the current one, from the promotion runs (each
    names its ``from_version`` and ``to_version``): the newest one that is not the champion."""
    runs = registry.client.search_runs(
        [registry.experiment_id],
        "tags.kind = 'promote'",
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    for run in runs:
        for key in ("to_version", "from_version"):
            value = str(run.data.params.get(key, ""))
            if value.isdigit() and int(value) != champion:
                return int(value)
    return None


def _latest_version(refs: list[ModelRef], models_dir: Path) -> int | None:
    from tagger.artefact import read_pointer

    latest = read_pointer(models_dir)
    matches = [r.version for r in refs if r.artefact_version == latest]
    return max(matches) if matches else None


def _mlflow_locations(registry: Registry, ref: ModelRef) -> list[str]:
    """Where MLflow keeps this version's model files: its logged model's artefacts (MLflow 3)."""
    mv = registry.client.get_model_version(registry.name, str(ref.version))
    source = str(mv.source or "")
    # the version's source names its logged model (models:/m-<id>); model_id is not always set
    model_id = mv.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-")
                               else None)  # fmt: skip
    if model_id:
        return [str(registry.client.get_logged_model(model_id).artifact_location)]
    # a version registered from run artefacts (MLflow 2 style): its source folder
    return [source] if source and not source.startswith("models:/") else []


def _delete_location(uri: str) -> int:
    """Delete an artefact location; the bytes freed when it is a local folder."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.file_utils import local_file_uri_to_path

    local = Path(local_file_uri_to_path(uri)) if uri.startswith(("file:", "/")) else None
    freed = dir_bytes(local) if local is not None else 0
    get_artifact_repository(uri).delete_artifacts()
    return freed


def _prune_version(registry: Registry, ref: ModelRef, models_dir: Path) -> int:
    """Delete one version's model files (models/ and MLflow) and archive it; bytes freed."""
    freed = 0
    local = models_dir / ref.artefact_version
    if local.is_dir():
        freed += dir_bytes(local)
        shutil.rmtree(local)
    if PRUNED_TAG in ref.tags:
        return freed  # its MLflow files went at an earlier prune
    for uri in _mlflow_locations(registry, ref):
        freed += _delete_location(uri)
    client, name, version = registry.client, registry.name, str(ref.version)
    client.set_model_version_tag(name, version, PRUNED_TAG,
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # fmt: skip
    client.set_model_version_tag(
        name, version, "pruned_reason",
        "model files deleted: not champion, previous champion, models/LATEST or among the "
        "newest TAGWATCH_KEEP_CHALLENGERS",
    )  # fmt: skip
    with warnings.catch_warnings():  # stages are deprecated in MLflow 3, still shown by its UI
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, "Archived")
    return freed


def prune_artefacts(settings: LifecycleSettings, registry: Registry | None = None) -> PruneReport:
    """Apply the plan; one version's error is reported and the others still pruned.

    Raises :class:`lifecycle.registry.RegistryError` when MLflow cannot be reached.
    """
    from lifecycle.registry import Registry

    registry = registry or Registry(settings)
    refs = registry.versions()
    by_version = {r.version: r for r in refs}
    champion = registry.champion()
    champion_v = champion.version if champion else None
    p = plan(
        sorted(by_version),
        champion_v,
        previous_champion(registry, champion_v),
        _latest_version(refs, Path(settings.models_dir)),
        settings.keep_challengers,
    )
    report = PruneReport(kept=p.keep)
    for version in p.prune:
        ref = by_version[version]
        already = PRUNED_TAG in ref.tags
        try:
            report.freed_bytes += _prune_version(registry, ref, Path(settings.models_dir))
        except Exception as exc:
            report.errors.append(f"v{version}: {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        if not already:
            report.pruned.append(version)
    log.info("%s", report.line())
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print what was kept and pruned as JSON too"
    )


def run(args: argparse.Namespace, settings: LifecycleSettings) -> int:
    """Exit 0 done, 1 some version could not be pruned, 2 MLflow or the store unreachable.

    Under the retrain lock: a running retrain prunes when it ends."""
    from lifecycle.lock import slot_for
    from lifecycle.registry import RegistryError

    slot = slot_for(settings)
    try:
        locked = slot.try_lock()
    except StoreError as exc:
        print(f"error: TAGWATCH_STORE_URL: {exc}", file=sys.stderr)
        return 2
    if not locked:
        print("a retrain is running: it prunes when it ends; nothing done")
        return 0
    try:
        report = prune_artefacts(settings)
    except RegistryError as exc:
        print(f"error: TAGWATCH_MLFLOW_TRACKING_URI: {exc}", file=sys.stderr)
        return 2
    finally:
        slot.unlock()
    if args.json:
        import json

        out: dict[str, Any] = {
            "kept": {str(k): v for k, v in report.kept.items()},
            "pruned": report.pruned,
            "freed_bytes": report.freed_bytes,
            "errors": report.errors,
        }
        print(json.dumps(out))
    print(report.line())
    return 1 if report.errors else 0


def prune_after_retrain(
    settings: LifecycleSettings, metrics: LifecycleMetrics | None = None
) -> PruneReport | None:
    """The prune a retrain ends with: never fails the retrain (None: it could not run)."""
    try:
        report = prune_artefacts(settings)
    except Exception as exc:  # MLflow down, a disk error: the next prune retries
        log.warning("prune after the retrain failed: %s", str(exc).splitlines()[0][:300])
        return None
    if metrics is not None:
        metrics.pruned_versions.inc(len(report.pruned))
        metrics.pruned_bytes.inc(report.freed_bytes)
    return report
