"""``python -m lifecycle promote`` and ``python -m lifecycle versions``: the champion by hand.

A promotion moves the alias ``champion`` of the registered model to a version; a rollback is a
promotion of an older version. Who did it (``--actor``, default: the OS user) and why
(``--reason``, required) are recorded on the version and as an MLflow run
(:meth:`lifecycle.registry.Registry.promote`). The predictors follow within their poll interval
(``TAGWATCH_MODEL_POLL_SECONDS``), without a restart. Bad input changes nothing and gets one
line naming the field: exit 2 for bad input, 1 when MLflow cannot be reached.

Before the alias moves, the version's artefact is downloaded as a predictor would and loaded,
and it scores a question (:meth:`lifecycle.registry.Registry.check`): a broken one changes
nothing and exits 3, saying why. Promoting the current champion again (after repairing its
artefact) re-stamps it: predictors that refused it try it again (exporter/supervisor.py).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from tagger.settings import TagwatchSettings

EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 1
EXIT_BROKEN = 3  # the version's artefact does not load or cannot score a question


def _version_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", type=_version_number, required=True, help="registered version number (N)"
    )
    parser.add_argument(
        "--reason", required=True, help="why (kept on the version and in the MLflow run)"
    )
    parser.add_argument("--actor", default=None, help="who (default: the OS user)")


def add_versions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per version")


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(args: argparse.Namespace, settings: TagwatchSettings) -> int:
    """Move the champion alias to ``args.version``; nothing changes on any error."""
    from lifecycle.registry import Registry, RegistryError, default_actor
    from tagger.artefact import ArtefactError

    reason = (args.reason or "").strip()
    if not reason:
        _error("--reason: must not be empty (say why this version is promoted)")
        return EXIT_BAD_INPUT
    actor = (args.actor or "").strip() or default_actor()
    try:
        registry = Registry(settings)
        try:
            target = registry.get(args.version)
        except RegistryError:
            known = ", ".join(str(r.version) for r in registry.versions()) or "none"
            _error(
                f"--version: {settings.registered_model} has no version {args.version} "
                f"(registered: {known})"
            )
            return EXIT_BAD_INPUT
        try:
            registry.check(target)
        except ArtefactError as exc:
            _error(
                f"--version: version {target.version} ({target.artefact_version}) does not "
                f"load: {exc}; the alias did not move"
            )
            return EXIT_BROKEN
        previous = registry.promote(target.version, reason=reason, actor=actor)
    except RegistryError as exc:
        _error(f"MLflow ({settings.mlflow_tracking_uri}): {exc}; nothing changed")
        return EXIT_UNREACHABLE
    if previous is not None and previous.version == target.version:
        print(
            f"{settings.registered_model}@{settings.champion_alias} is already version "
            f"{target.version}: promoted again by {actor} ({reason}); predictors that refused "
            "it try it again"
        )
        return 0
    kind = "rollback" if previous and target.version < previous.version else "promotion"
    print(
        f"{settings.registered_model}@{settings.champion_alias}: version "
        f"{previous.version if previous else 'none'} -> {target.version} "
        f"({target.artefact_version}), {kind} by {actor}: {reason}"
    )
    print("predictors following the registry serve it within their poll interval")
    return 0


def run_versions(args: argparse.Namespace, settings: TagwatchSettings) -> int:
    """List the registered versions, newest last, with their aliases and promotion notes."""
    import json

    from lifecycle.registry import Registry, RegistryError

    try:
        refs = Registry(settings).versions()
    except RegistryError as exc:
        _error(f"MLflow ({settings.mlflow_tracking_uri}): {exc}")
        return EXIT_UNREACHABLE
    if args.json:
        for ref in refs:
            print(
                json.dumps(
                    {
                        "version": ref.version,
                        "artefact_version": ref.artefact_version,
                        "aliases": ref.aliases,
                        "created_at": ref.created_at,
                        "tags": ref.tags,
                    },
                    sort_keys=True,
                )
            )
        return 0
    if not refs:
        print(f"{settings.registered_model}: no registered version yet (python -m tagger.train)")
        return 0
    print(
        f"{'version':>7}  {'aliases':<10} {'artefact':<20} {'created (UTC)':<17} "
        f"{'val. Jaccard':>12}  promoted"
    )
    for ref in refs:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(ref.created_at))
        promoted = ""
        if "promoted_by" in ref.tags:
            promoted = (
                f"{ref.tags.get('promoted_at', '')} by {ref.tags['promoted_by']}: "
                f"{ref.tags.get('promoted_reason', '')}"
            )
        jaccard = ref.tags.get("validation_jaccard", "")
        with contextlib.suppress(ValueError):
            jaccard = f"{float(jaccard):.4f}"
        print(
            f"{ref.version:>7}  {','.join(ref.aliases) or '-':<10} {ref.artefact_version:<20} "
            f"{created:<17} {jaccard:>12}  {promoted}"
        )
    return 0
