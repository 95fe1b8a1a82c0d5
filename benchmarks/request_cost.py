"""What instrumentation costs one /predict, in process: the predictor's WSGI app called in a loop.

    python -m benchmarks.request_cost [--requests 20000] [--rounds 5]

No HTTP server, no client: each variant's app (metrics in prometheus multiprocess mode, as under
gunicorn; the store on SQLite with its spool, as in ``make up``) is called with prebuilt
/predict environs, round after round, variants interleaved, median kept. It splits the
instrumentation overhead that ``benchmarks/predictor.py`` (c) measures over HTTP into its parts
(metrics, store), in CPU µs per request, where the HTTP figure only gives their sum.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VARIANTS = {
    "off": {"metrics_enabled": False, "store_enabled": False},
    "metrics": {"metrics_enabled": True, "store_enabled": False},
    "store": {"metrics_enabled": False, "store_enabled": True},
    "both": {"metrics_enabled": True, "store_enabled": True},
}


def _environs(titles: list[str]) -> list[tuple[bytes, dict[str, Any]]]:
    bodies = [json.dumps({"title": t}).encode() for t in titles]
    return [
        (
            b,
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/predict",
                "SCRIPT_NAME": "",
                "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "CONTENT_TYPE": "application/json",
                "CONTENT_LENGTH": str(len(b)),
                "wsgi.url_scheme": "http",
                "wsgi.errors": io.StringIO(),
                "wsgi.multithread": False,
                "wsgi.multiprocess": True,
                "wsgi.run_once": False,
                "wsgi.version": (1, 0),
            },
        )
        for b in bodies
    ]


def _loop(app: Callable[..., Any], environs: list[tuple[bytes, dict[str, Any]]], n: int) -> float:
    """CPU seconds per request (this process's threads: the store's writer thread included)."""

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    t0 = time.process_time()
    for i in range(n):
        body, environ = environs[i % len(environs)]
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        for _ in app(env, start_response):
            pass
    return (time.process_time() - t0) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="requests per variant per round")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tagwatch-cost-"))
    # before prometheus_client is imported: values in memory-mapped files, as under gunicorn
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "mp")
    (tmp / "mp").mkdir()
    from exporter.app import create_app
    from exporter.settings import PredictorSettings
    from tagger.data import load_questions
    from tagger.settings import TagwatchSettings

    settings = TagwatchSettings()
    titles = load_questions(settings.titles_path)["title"].tolist()[:2000]
    environs = _environs(titles)
    try:
        apps = {}
        for name, options in VARIANTS.items():
            apps[name] = create_app(
                PredictorSettings(
                    models_dir=settings.models_dir,
                    store_url=f"sqlite:///{tmp / f'{name}.sqlite3'}",
                    multiproc_dir=tmp / "mp",
                    **options,
                )
            )
            _loop(apps[name].wsgi_app, environs, 2000)  # warm-up
        cost: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(a.rounds):
            for name, app in apps.items():
                cost[name].append(_loop(app.wsgi_app, environs, a.requests))
        for app in apps.values():
            writer = app.extensions["tagwatch"].writer
            if writer is not None:
                writer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {name: statistics.median(v) * 1e6 for name, v in cost.items()}
    print(f"CPU µs per /predict, in process ({a.requests} requests × {a.rounds} rounds, median)")
    print(f"    {'variant':<34}{'µs':>8}{'+ over off':>12}")
    for name in VARIANTS:
        extra = med[name] - med["off"]
        print(f"    {name:<34}{med[name]:>8.1f}{extra:>+11.1f} ({extra / med['off'] * 100:+.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
