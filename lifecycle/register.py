"""``python -m lifecycle register``: put a model that exists only on disk into the registry.

A stack whose ``models/LATEST`` was trained before MLflow (or whose registry was wiped) keeps
serving that model: it is registered as a new version and, when there is no champion yet, made
champion. Retraining instead would change the served model behind the user's back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagger.artefact import ArtefactError, resolve_version
from tagger.settings import TagwatchSettings
from tagger.train import add_promote_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-version",
        default="latest",
        help="artefact folder under the models folder (default: the one models/LATEST names)",
    )
    add_promote_option(parser)


def run(args: argparse.Namespace, settings: TagwatchSettings) -> int:
    from lifecycle.registry import Registry, RegistryError, sync_champion
    from tagger.tracking import log_training

    try:
        folder = resolve_version(Path(settings.models_dir), args.model_version)
    except ArtefactError as exc:
        print(f"error: --model-version: {exc}", file=sys.stderr)
        return 2
    try:
        registered = log_training(
            settings, folder, run_name=f"register {folder.name}", tags={"kind": "register"}
        )
        registry = Registry(settings)
        promoted = args.promote == "always" or (
            args.promote == "auto" and registry.champion() is None
        )
        if promoted:
            registry.promote(registered.version, reason=f"registered existing {folder.name}")
            sync_champion(settings, Path(settings.models_dir))
    except RegistryError as exc:
        print(f"error: MLflow: {exc}; nothing changed", file=sys.stderr)
        return 1
    role = f", now {settings.champion_alias}" if promoted else ""
    name = settings.registered_model
    print(f"registered {folder.name} as {name} version {registered.version}{role}")
    return 0
