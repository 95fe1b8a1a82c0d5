"""``python -m exporter serve``: a small supervisor that keeps gunicorn serving the champion.

Why a supervisor: resolving ``models:/tagwatch@champion`` needs MLflow (``import mlflow`` costs
~1.6 s and ~170 MB), and each gunicorn worker would pay it. The supervisor pays it once: it
syncs the champion into the local cache (``models/<artefact_version>/`` + ``models/LATEST``,
:func:`lifecycle.registry.sync_champion`), and workers keep loading the local artefact.

Every ``TAGWATCH_MODEL_POLL_SECONDS`` it syncs again; when ``models/LATEST`` changed (a
promotion in MLflow, or a pointer rewritten by hand without MLflow) it rolls the workers : a
throw-away process first loads the new model and answers one question (preflight), then
``workers`` times SIGTTIN (gunicorn adds workers, which load the new model while the old ones
keep serving), and once every new worker reports the new version, as many SIGTTOU (gunicorn
stops the oldest workers gracefully: each finishes its request).
The listening socket never closes and there are always ``workers`` workers accepting, so no
request fails and none waits for a worker to boot. A new model that does not load is refused:
the new workers are stopped, the old model stays served.

A bad version never takes serving down (docs/runbook.md#modelloadfailed):

- at start, the wanted version (``models/LATEST``, which the sync points at the champion) is
  preflighted too; when it does not load, the last good version is served instead: the previous
  champions by the registry's promotion history, else the cached artefacts (newest first, never
  a challenger the gate rejected). ``/readyz`` stays 200 with a warning naming the refused
  version and why, the log says so, ``tagwatch_model_swaps_total{outcome="refused"}`` counts it
  and ``tagwatch_model_refused_info`` stays 1 while it lasts (alert ModelLoadFailed);
- a refused version is tried again when its model file changes (size, mtime or inode: a repair
  or a new download) or when it is promoted again (its promotion stamp in the registry changes);
  a re-promotion also checks the cached copy against the registry's and replaces it when it
  differs (a damaged cache heals once by itself, right after the first refusal, the same way);
- ``models/LATEST`` is only ever written by the sync, and only to the champion's name when it
  differs: predictors sharing ``models/`` write the same thing once and never undo each other.
  What a predictor actually serves is in its own status (``served``), never in the pointer.

The supervisor tells the workers which version to load and ``/metrics`` what it did through
``supervisor.json`` in the prometheus multiprocess folder (served version, registry errors,
swaps, registry versions); each worker writes
``workers/<pid>.json`` there once its app is loaded (``gunicorn_conf.post_worker_init``).
MLflow unreachable never stops the predictor: the cached champion is served, a warning logged,
``tagwatch_model_registry_errors_total`` counts it, and the next poll tries again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exporter.settings import PredictorSettings

log = logging.getLogger("exporter.supervisor")

STATUS_FILE = "supervisor.json"
WORKERS_DIR = "workers"
# tagger.artefact's names (not imported: keeps pandas out of here)
POINTER_FILE = "LATEST"
MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"
# at most this many other versions are preflighted when the wanted one does not load at start
MAX_FALLBACKS = 3
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


@dataclass
class SupervisorStatus:
    """What the supervisor did, read by every worker's /metrics (exporter.metrics)."""

    registry_errors: int = 0
    last_sync_timestamp: float = 0.0
    swaps: dict[str, int] = field(default_factory=lambda: {"done": 0, "refused": 0})
    # artefact version -> registry version, for tagwatch_model_registry_version
    registry_versions: dict[str, int] = field(default_factory=dict)
    # the artefact version workers load (models/LATEST is what is wanted; this is what passed
    # the preflight): a worker (re)started at any time never loads a model that was refused
    served: str | None = None
    # the registry version of the champion at the last sync (0: unknown, or not following)
    champion_version: int = 0
    # while the wanted version is refused: {"version", "reason", "kind", "since"} (/readyz)
    refused: dict[str, Any] | None = None


@dataclass
class Refusal:
    """A refused version and what it was refused as: tried again once ``key`` changes."""

    version: str
    key: tuple[str, str]  # (model file fingerprint, promotion stamp)
    reason: str
    kind: str
    since: float
    refreshed_stamp: str | None = None  # the promotion stamp its cached copy was checked at

    def public(self) -> dict[str, Any]:
        return {"version": self.version, "reason": self.reason, "kind": self.kind,
                "since": self.since}  # fmt: skip


def status_path(multiproc_dir: Path) -> Path:
    return Path(multiproc_dir) / STATUS_FILE


def read_status(multiproc_dir: Path | None) -> SupervisorStatus | None:
    """The supervisor's status, or None when there is none (no supervisor, single process)."""
    if multiproc_dir is None:
        return None
    try:
        raw = json.loads(status_path(multiproc_dir).read_text())
    except (OSError, ValueError):
        return None
    status = SupervisorStatus()
    for key, value in raw.items():
        if hasattr(status, key):
            setattr(status, key, value)
    return status


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_status(multiproc_dir: Path, status: SupervisorStatus) -> None:
    _write_atomic(status_path(multiproc_dir), json.dumps(asdict(status), sort_keys=True))


def read_pointer(models_dir: Path) -> str | None:
    try:
        return (Path(models_dir) / POINTER_FILE).read_text().strip() or None
    except OSError:
        return None


def write_pointer(models_dir: Path, version: str) -> None:
    _write_atomic(Path(models_dir) / POINTER_FILE, version + "\n")


def report_worker(
    multiproc_dir: Path, pid: int, model_version: str | None, error: str | None
) -> None:
    """Called by each worker once its app is loaded: which model it serves."""
    folder = Path(multiproc_dir) / WORKERS_DIR
    folder.mkdir(exist_ok=True)
    payload = {"pid": pid, "model_version": model_version, "error": error}
    _write_atomic(folder / f"{pid}.json", json.dumps(payload))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by gunicorn) no longer serves
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    return True


def worker_reports(multiproc_dir: Path) -> dict[int, dict[str, Any]]:
    """The live workers' reports by pid; reports of exited workers are removed."""
    out: dict[int, dict[str, Any]] = {}
    folder = Path(multiproc_dir) / WORKERS_DIR
    for path in folder.glob("*.json"):
        try:
            report = json.loads(path.read_text())
            pid = int(report["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            out[pid] = report
        else:
            path.unlink(missing_ok=True)
    return out


PREFLIGHT = """
import sys
from tagger.artefact import ArtefactError, check_artefact
try:
    check_artefact(sys.argv[1], sys.argv[2])
except ArtefactError as exc:
    sys.exit(str(exc))
"""
# why a version was refused, as a bounded label (tagwatch_model_refused_info{reason}); the
# full message is in /readyz and the log
REFUSAL_KINDS = ("missing", "unloadable", "cannot_score", "timeout", "workers")


def refusal_kind(problem: str) -> str:
    if "took more than" in problem:
        return "timeout"
    if "no such model file" in problem or "no model trained" in problem:
        return "missing"
    if "cannot score" in problem:
        return "cannot_score"
    return "unloadable"


def model_fingerprint(models_dir: Path, version: str) -> str:
    """Changes whenever the model file is rewritten (repaired, downloaded again, replaced)."""
    try:
        st = (Path(models_dir) / version / MODEL_FILE).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def cached_candidates(models_dir: Path, exclude: str) -> list[str]:
    """Cached artefacts that may serve in place of ``exclude``, newest model file first;
    challengers the retrain gate did not promote are never candidates."""
    found = []
    for card_path in Path(models_dir).glob(f"*/{CARD_FILE}"):
        folder = card_path.parent
        if folder.name == exclude or folder.name.startswith("."):
            continue
        try:
            card = json.loads(card_path.read_text())
            mtime = (folder / MODEL_FILE).stat().st_mtime
        except (OSError, ValueError):
            continue
        gate = card.get("gate") if isinstance(card, dict) else None
        if isinstance(gate, dict) and gate.get("decision") != "promoted":
            continue
        found.append((mtime, folder.name))
    return [name for _, name in sorted(found, reverse=True)]


def preflight(models_dir: Path, version: str, timeout: float) -> str | None:
    """Load ``version`` and answer one question in a throw-away process; None if it works.

    A separate process keeps the model libraries out of the supervisor, and a model that does
    not load never reaches a worker that would answer 503 with it.
    """
    try:
        out = subprocess.run(
            [sys.executable, "-c", PREFLIGHT, str(models_dir), version],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading it took more than {timeout:g} s"
    if out.returncode == 0:
        return None
    lines = out.stderr.strip().splitlines()
    return lines[-1][:300] if lines else f"exit code {out.returncode}"


def follows_registry(settings: PredictorSettings) -> bool:
    """MLflow is used only when following is on, a tracking URI is set and no version pinned."""
    return bool(
        settings.follow_registry
        and settings.mlflow_tracking_uri.strip()
        and settings.model_version == "latest"
    )


class Supervisor:
    """Runs gunicorn as a child and swaps the model it serves; see the module docstring."""

    def __init__(self, settings: PredictorSettings, argv: Sequence[str], env: dict[str, str]):
        if settings.multiproc_dir is None:
            raise ValueError("the supervisor needs settings.multiproc_dir")
        self.settings = settings
        self.argv = list(argv)
        self.env = env
        self.multiproc_dir = Path(settings.multiproc_dir)
        self.models_dir = Path(settings.models_dir)
        self.follow = follows_registry(settings)
        self.swappable = settings.model_version == "latest"
        self.status = SupervisorStatus()
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.first_sync = threading.Event()
        self._refusal: Refusal | None = None
        self._stamp = ""  # promotion stamp of the champion at the last sync
        self._registry_down = False
        self._lock = threading.Lock()

    # --- registry ---------------------------------------------------------------------------
    def sync(self) -> None:
        """Resolve the champion into the local cache; a failure is logged, counted, survived."""
        if not self.follow:
            return
        try:
            # imports mlflow: the supervisor only
            from lifecycle.registry import promotion_stamp, sync_champion

            ref = sync_champion(self.settings, self.models_dir, refresh=self._refresh)
        except Exception as exc:  # RegistryError, or anything MLflow raises on a bad URI
            self.status.registry_errors += 1
            level = logging.DEBUG if self._registry_down else logging.WARNING
            log.log(
                level,
                "model registry unreachable (%s): serving the cached model %s; retrying every %g s",
                str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
                read_pointer(self.models_dir),
                self.settings.model_poll_seconds,
            )
            self._registry_down = True
        else:
            if self._registry_down:
                log.warning("model registry reachable again")
            self._registry_down = False
            self.status.last_sync_timestamp = time.time()
            if ref is None:
                log.info("no %s@%s yet: serving the local model", *self._model_names())
                self.status.champion_version = 0
                self._stamp = ""
            else:
                self.status.registry_versions[ref.artefact_version] = ref.version
                self.status.champion_version = ref.version
                self._stamp = promotion_stamp(ref)
        self._publish()

    def _refresh(self, ref: Any) -> bool:
        """Check the cached copy of a refused champion against the registry's: once after the
        refusal (a damaged cache heals), then once per promotion again."""
        from lifecycle.registry import promotion_stamp

        refusal = self._refusal
        if refusal is None or refusal.version != ref.artefact_version:
            return False
        stamp = promotion_stamp(ref)
        if refusal.refreshed_stamp == stamp:
            return False
        refusal.refreshed_stamp = stamp
        log.info(
            "model %s refused: checking its cached copy against registry version %d",
            ref.artefact_version, ref.version,
        )  # fmt: skip
        return True

    def _model_names(self) -> tuple[str, str]:
        return self.settings.registered_model, self.settings.champion_alias

    def _publish(self) -> None:
        with self._lock:
            write_status(self.multiproc_dir, self.status)

    # --- swap --------------------------------------------------------------------------------
    def _signal_child(self, sig: int) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, sig)

    def _workers(self) -> set[int]:
        """gunicorn's live worker processes (its children that have not exited)."""
        if self.child is None:
            return set()
        master = self.child.pid
        out = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == master and fields[0] not in ("Z", "X"):
                    out.add(int(stat.parent.name))
        return out

    def _scale(self, sig: int, n: int) -> None:
        """Send SIGTTIN/SIGTTOU ``n`` times, one at a time: the same signal sent again before
        gunicorn handled it would merge with it (one worker more or less than asked)."""
        step = 1 if sig == signal.SIGTTIN else -1
        wait = 5.0 if step > 0 else self.settings.model_swap_timeout_seconds
        for _ in range(n):
            target = len(self._workers()) + step
            self._signal_child(sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not self.stopping.is_set():
                count = len(self._workers())
                if (count >= target) if step > 0 else (count <= target):
                    break
                time.sleep(0.02)

    def _wait_new_workers(self, known: set[int], n: int, timeout: float) -> list[dict[str, Any]]:
        """Reports of up to ``n`` workers that were not in ``known``, once they loaded."""
        deadline = time.monotonic() + timeout
        fresh: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline and not self.stopping.is_set():
            for pid, report in worker_reports(self.multiproc_dir).items():
                if pid not in known:
                    fresh[pid] = report
            if len(fresh) >= n:
                break
            time.sleep(0.05)
        return list(fresh.values())

    def _retry_key(self, version: str) -> tuple[str, str]:
        return model_fingerprint(self.models_dir, version), self._stamp

    def _refuse(self, old: str | None, new: str, why: object, kind: str | None = None) -> bool:
        """Count and record ``new`` as refused; ``old`` stays served (models/LATEST is not
        touched: it names what is wanted, see the module docstring)."""
        reason = str(why)
        log.error(
            "model %s refused (%s): %s", new, reason,
            f"serving {old}" if old else "no model to serve",
        )  # fmt: skip
        previous = self._refusal
        self._refusal = Refusal(
            version=new,
            key=self._retry_key(new),
            reason=reason,
            kind=kind or refusal_kind(reason),
            since=time.time(),
            refreshed_stamp=previous.refreshed_stamp
            if previous is not None and previous.version == new
            else None,
        )
        self.status.refused = self._refusal.public()
        self.status.swaps["refused"] = self.status.swaps.get("refused", 0) + 1
        self.status.served = old
        self._publish()
        return False

    def _clear_refusal(self) -> None:
        if self._refusal is None:
            return
        log.info("model %s no longer wanted or served: its refusal is over", self._refusal.version)
        self._refusal = None
        self.status.refused = None
        self._publish()

    def swap(self, old: str | None, new: str) -> bool:
        """Roll every worker onto ``new`` (already in models/LATEST); False if refused."""
        t0 = time.monotonic()
        n = self.settings.workers
        problem = preflight(self.models_dir, new, self.settings.model_swap_timeout_seconds)
        if problem is not None:  # checked before any worker could answer with it
            return self._refuse(old, new, problem)
        log.info("model %s -> %s: starting %d new workers", old, new, n)
        self.status.served = new  # what a worker starting from now on loads
        self._refusal = None  # it loads: refused again only if its workers fail
        self.status.refused = None
        self._publish()
        known = set(worker_reports(self.multiproc_dir))
        self._scale(signal.SIGTTIN, n)  # gunicorn boots them while the old workers keep serving
        fresh = self._wait_new_workers(known, n, self.settings.model_swap_timeout_seconds)
        if self.stopping.is_set():
            return False
        bad = [r for r in fresh if r.get("model_version") != new]
        if len(fresh) < n or bad:
            why = bad[0].get("error") or bad[0] if bad else f"{len(fresh)} of {n} workers came up"
            kind = refusal_kind(str(why)) if bad and bad[0].get("error") else "workers"
            self.status.served = old  # workers started from now on load ``old`` again
            self._publish()
            for report in fresh:  # gunicorn replaces each with a worker on ``old``
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(report["pid"]), signal.SIGTERM)
            self._scale(signal.SIGTTOU, n)  # back to ``workers`` workers
            return self._refuse(old, new, why, kind)
        self._scale(signal.SIGTTOU, n)  # gunicorn stops the oldest workers gracefully
        self.status.swaps["done"] = self.status.swaps.get("done", 0) + 1
        self._publish()
        log.info("model %s served by every worker after %.1f s", new, time.monotonic() - t0)
        return True

    def check(self) -> None:
        """One poll: sync, then swap if the pointer names another version than the served one
        (a refused version only once it changed since: file or promotion)."""
        self.sync()
        current = read_pointer(self.models_dir)
        served = self.status.served
        if current is None or self.stopping.is_set():
            return
        if current == served:
            self._clear_refusal()  # e.g. a rollback to the version served as the fallback
            return
        refusal = self._refusal
        if refusal is not None and refusal.version == current:
            if refusal.key == self._retry_key(current):
                return  # refused, and nothing changed since
            log.info("model %s changed since it was refused: trying it again", current)
        if served is None:
            # nothing was loadable at start: workers serve 503 until a model exists; restart them
            problem = preflight(self.models_dir, current, self.settings.model_swap_timeout_seconds)
            if problem is not None:
                self._refuse(None, current, problem)
                return
            self.status.served = current
            self._refusal = None
            self.status.refused = None
            self._publish()
            self._signal_child(signal.SIGHUP)
            log.info("model %s available: reloading the workers", current)
            return
        self.swap(served, current)

    def _watch(self) -> None:
        try:
            self.sync()
        finally:
            self.first_sync.set()
        while not self.stopping.wait(self.settings.model_poll_seconds):
            if self.child is None:
                continue
            try:
                self.check()
            except Exception:  # the watcher must outlive any single failure
                log.exception(
                    "model check failed; next try in %g s", self.settings.model_poll_seconds
                )

    # --- start -------------------------------------------------------------------------------
    def _start_model(self) -> str | None:
        """The version the workers start on: the wanted one if it loads, else the last good."""
        wanted = read_pointer(self.models_dir)
        if wanted is None:
            return None
        timeout = self.settings.model_swap_timeout_seconds
        problem = preflight(self.models_dir, wanted, timeout)
        if problem is None:
            return wanted
        t0 = time.monotonic()
        for candidate in self._fallback_candidates(wanted):
            other = preflight(self.models_dir, candidate, timeout)
            if other is None:
                self._refuse(candidate, wanted, problem)
                log.error(
                    "model %s does not load: serving %s, the last good version, after %.1f s "
                    "(/readyz warns; promote a repaired version, or fix the file, to return)",
                    wanted, candidate, time.monotonic() - t0,
                )  # fmt: skip
                return candidate
            log.warning("fallback %s does not load either (%s)", candidate, other)
        self._refuse(None, wanted, problem)
        return None

    def _fallback_candidates(self, refused: str) -> list[str]:
        """Previous champions (registry order) first, then the other cached artefacts."""
        out: list[str] = []
        if self.follow:
            try:
                from lifecycle.registry import cached_previous_champions

                refs = cached_previous_champions(
                    self.settings, self.models_dir, refused, MAX_FALLBACKS
                )
            except Exception as exc:  # MLflow unreachable: the local cache only
                log.warning("previous champions unknown (%s): trying the cached models", exc)
            else:
                for ref in refs:
                    self.status.registry_versions[ref.artefact_version] = ref.version
                    out.append(ref.artefact_version)
        out += [v for v in cached_candidates(self.models_dir, refused) if v not in out]
        return out[:MAX_FALLBACKS]

    # --- process -----------------------------------------------------------------------------
    def _forward(self, signum: int, frame: object) -> None:
        if signum != signal.SIGHUP:
            self.stopping.set()
        self._signal_child(signum)

    def run(self) -> int:
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        if self.swappable:
            self._publish()
            watcher.start()
            # the cached champion is served at once if MLflow is slow; a later sync swaps
            deadline = time.monotonic() + self.settings.model_sync_timeout_seconds
            while not self.first_sync.is_set() and not self.stopping.is_set():
                if time.monotonic() > deadline:
                    break
                self.first_sync.wait(0.1)
            if not self.first_sync.is_set() and not self.stopping.is_set():
                log.warning(
                    "model registry did not answer within %g s: starting on the cached model",
                    self.settings.model_sync_timeout_seconds,
                )
        if self.stopping.is_set():
            return 0
        self.status.served = self._start_model() if self.swappable else None
        self._publish()
        self.child = subprocess.Popen(self.argv, env=self.env)
        log.info(
            "gunicorn %d serving model %s (%s)",
            self.child.pid,
            self.status.served or self.settings.model_version,
            "following the registry"
            if self.follow
            else "following models/LATEST"
            if self.swappable
            else "pinned",
        )
        while True:
            try:
                code = self.child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
        self.stopping.set()
        return code
