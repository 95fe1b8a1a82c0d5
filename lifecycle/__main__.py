"""``python -m lifecycle``: promote, list versions, retrain from feedback, run the service,
prune old versions' artefacts."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from lifecycle.settings import LifecycleSettings

# subcommand -> (module, help); each module has add_arguments(parser) and run(args, settings)
COMMANDS = {
    "promote": ("lifecycle.promote", "move the champion alias to a version (rollback included)"),
    "versions": ("lifecycle.promote", "list the registered versions and their aliases"),
    "register": ("lifecycle.register", "register the model on disk (models/LATEST) in MLflow"),
    "retrain": ("lifecycle.retrain", "train a challenger from the store's feedback, gate it"),
    "serve": ("lifecycle.service", "scheduled retraining, Alertmanager webhook, /metrics"),
    "prune": ("lifecycle.prune", "delete old versions' model files (keeps champion, previous, N)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifecycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text)
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(p)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = LifecycleSettings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "TAGWATCH_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"error: {field}: {err['msg']}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    run = getattr(module, f"run_{args.command}", None) or module.run
    return int(run(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
