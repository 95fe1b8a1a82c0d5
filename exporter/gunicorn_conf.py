"""gunicorn configuration for the predictor (loaded by ``python -m exporter serve``).

prometheus_client's multiprocess mode: every worker writes its metric values to files in
``PROMETHEUS_MULTIPROC_DIR`` (set and wiped by the launcher before gunicorn starts); a dead
worker's live gauges are removed here so /metrics never shows a ghost.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess

worker_class = "sync"
preload_app = False  # each worker imports the app after fork: its own metric files
graceful_timeout = 10
timeout = 30
# gunicorn >= 24 opens a control socket in ~/.gunicorn; several predictors (tests, benchmarks)
# on one host would fight over it, and nothing here uses it
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    # one BLAS thread per worker: the model maths is tiny and workers already use every core
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def worker_exit(server: Any, worker: Any) -> None:
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("tagwatch")
    if services is None:
        return
    services.metrics.flush()  # queued observations reach the worker's metric files
    if services.store is not None:
        services.store.close()  # write the rows still queued before the worker goes


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)
