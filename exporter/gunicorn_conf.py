"""gunicorn configuration for the predictor (loaded by ``python -m exporter serve``).

prometheus_client's multiprocess mode: every worker writes its metric values to files in
``PROMETHEUS_MULTIPROC_DIR`` (set and wiped by the launcher before gunicorn starts); a dead
worker's live gauges are removed here so /metrics never shows a ghost, and its counters and
histograms are folded into one archive file (exporter/multiproc.py) so that the directory and
the time /metrics takes stay bounded however many workers are restarted.
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


def on_starting(server: Any) -> None:
    # import the modules (not the app) once in the master: a new or restarted worker then only
    # builds the app (~0.1 s) instead of importing Flask, pandas and scikit-learn (~2 s)
    import exporter.app  # noqa: F401


def post_fork(server: Any, worker: Any) -> None:
    from exporter import gunicorn_errors

    gunicorn_errors.install()  # gunicorn's own 4xx answers in JSON, like the app's
    # one BLAS thread per worker: the model maths is tiny and workers already use every core
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def post_worker_init(worker: Any) -> None:
    # tell the supervisor which model this worker loaded: it rolls workers on that signal
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("tagwatch")
    if services is None or services.settings.multiproc_dir is None:
        return
    from exporter.supervisor import report_worker

    artefact = services.artefact
    report_worker(
        services.settings.multiproc_dir,
        worker.pid,
        artefact.version if artefact is not None else None,
        services.artefact_error,
    )


def worker_exit(server: Any, worker: Any) -> None:
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("tagwatch")
    if services is None:
        return
    services.metrics.flush()  # queued observations reach the worker's metric files
    if services.store is not None:
        services.store.close()  # write the rows still queued before the worker goes


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)
    # fold the dead worker's counters into one archive file: the directory stays bounded
    from exporter.multiproc import merge_dead_worker
    from exporter.settings import PredictorSettings

    directory = PredictorSettings().multiproc_dir
    if directory is not None:
        try:
            merge_dead_worker(directory, worker.pid)
            # and its model report (exporter/supervisor.py): /metrics reads every one of them
            from exporter.supervisor import WORKERS_DIR

            (directory / WORKERS_DIR / f"{worker.pid}.json").unlink(missing_ok=True)
        except Exception:  # never take the master down over metrics
            server.log.exception("metrics of worker %s not merged", worker.pid)
