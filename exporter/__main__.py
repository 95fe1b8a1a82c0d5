"""``python -m exporter serve``: the predictor under gunicorn, in prometheus multiprocess mode."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.settings import PredictorSettings

DEFAULT_MULTIPROC_DIR = Path("var/prometheus-multiproc")


def gunicorn_argv(settings: PredictorSettings, app: str = "exporter.app:create_app()") -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:exporter.gunicorn_conf",
        "--workers",
        str(settings.workers),
        "--bind",
        f"{settings.host}:{settings.port}",
        "--log-level",
        settings.log_level.lower(),
        app,
    ]


def prepare_multiproc_dir(path: Path) -> Path:
    """An empty folder: files of a previous run would add old counts to the new totals."""
    path = path.resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the predictor under gunicorn")
    serve.add_argument("--app", default="exporter.app:create_app()", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = PredictorSettings()
    multiproc = prepare_multiproc_dir(settings.multiproc_dir or DEFAULT_MULTIPROC_DIR)
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    argv_ = gunicorn_argv(settings, args.app)
    logging.getLogger("exporter").info(
        "serving on http://%s:%s with %d workers", settings.host, settings.port, settings.workers
    )
    os.execvpe(argv_[0], argv_, env)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
