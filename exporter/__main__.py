"""``python -m exporter serve``: the predictor under gunicorn, in prometheus multiprocess mode."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from exporter.credentials import load_credentials
from exporter.settings import PredictorSettings
from exporter.supervisor import Supervisor

DEFAULT_MULTIPROC_DIR = Path("var/prometheus-multiproc")


def gunicorn_argv(
    settings: PredictorSettings, app: str = "exporter.app:create_app()", bind: str | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:exporter.gunicorn_conf",
        "--workers",
        str(settings.workers),
        "--bind",
        bind or f"{settings.host}:{settings.port}",
        "--log-level",
        settings.log_level.lower(),
        *(["--max-requests", str(settings.max_requests)] if settings.max_requests else []),
        app,
    ]


def prepare_multiproc_dir(path: Path) -> Path:
    """An empty folder: files of a previous run would add old counts to the new totals."""
    path = path.resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _start_proxy(
    settings: PredictorSettings, multiproc: Path, feedback_token: str | None
) -> str | None:
    """Start nginx on host:port (see exporter/proxy.py); gunicorn's bind, or None without it.
    The rate limit is nginx's: without nginx there is none (said in the log)."""
    from exporter import proxy

    nginx = proxy.nginx_binary(settings)
    if nginx is None:
        if settings.rate_limit_per_second > 0:
            logging.getLogger("exporter").warning(
                "no proxy (TAGWATCH_PROXY=%s%s): TAGWATCH_RATE_LIMIT_PER_SECOND=%g is not "
                "enforced; put a rate-limiting proxy in front of the predictor",
                settings.proxy,
                ", nginx not installed" if settings.proxy == "auto" else "",
                settings.rate_limit_per_second,
            )
        return None
    runtime = settings.proxy_dir or multiproc.parent / f"predictor-proxy-{settings.port}"
    if len(str(runtime.resolve())) > 80:  # a unix socket path is at most 107 bytes
        # one folder per port (wiped at each start): no leftovers pile up
        runtime = Path(tempfile.gettempdir()) / f"tagwatch-proxy-{os.getuid()}-{settings.port}"
    runtime = proxy.prepare_runtime_dir(runtime)
    return f"unix:{proxy.start_nginx(nginx, settings, runtime, feedback_token)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the predictor under gunicorn")
    serve.add_argument("--app", default="exporter.app:create_app()", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = PredictorSettings()
    if importlib.util.find_spec("gunicorn") is None:
        print(
            f"error: gunicorn is not installed for {sys.executable}: run the predictor from the "
            "project's virtualenv (.venv/bin/python -m exporter serve, or make serve)",
            file=sys.stderr,
        )
        return 2
    credentials = load_credentials(settings)
    if credentials.fatal:  # a replica that cannot check credentials must not start
        for problem in credentials.fatal:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    multiproc = prepare_multiproc_dir(settings.multiproc_dir or DEFAULT_MULTIPROC_DIR)
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    try:
        bind = _start_proxy(settings, multiproc, credentials.feedback_token)
    except (OSError, RuntimeError) as exc:
        print(f"error: cannot start the proxy: {exc}", file=sys.stderr)
        return 2
    argv_ = gunicorn_argv(settings, args.app, bind)
    logging.getLogger("exporter").info(
        "serving on http://%s:%s with %d workers%s",
        settings.host,
        settings.port,
        settings.workers,
        " behind nginx" if bind else " (no proxy: slow clients can hold workers)",
    )
    # gunicorn runs as a child of the supervisor, which follows the champion (supervisor.py)
    return Supervisor(settings.model_copy(update={"multiproc_dir": multiproc}), argv_, env).run()


if __name__ == "__main__":
    raise SystemExit(main())
