"""Keep prometheus_client's multiprocess directory bounded across worker restarts.

Every worker writes ``counter_<pid>.db``, ``histogram_<pid>.db`` and ``gauge_<mode>_<pid>.db``
(mmapped, ≥ 1 MiB sparse each); /metrics reads every file. Without care each dead worker
leaves its files behind and /metrics slows down with every restart. When a worker exits, its
counters and histograms are added into one archive file per kind (totals stay monotonic), and
its gauge files are removed (a dead process has no current value).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

ARCHIVE_PID = "archive"  # counter_archive.db: MultiProcessCollector reads it like a worker's


def merge_dead_worker(directory: Path, pid: int) -> int:
    """Fold worker ``pid``'s counter and histogram files into the archives, remove its
    files; the number of files removed. Runs in the gunicorn master (one at a time), after
    the worker is reaped and before a replacement can reuse its pid."""
    removed = 0
    for kind in ("counter", "histogram"):
        dead = directory / f"{kind}_{pid}.db"
        if not dead.exists():
            continue
        values = MmapedDict.read_all_values_from_file(str(dead))
        archive = MmapedDict(str(directory / f"{kind}_{ARCHIVE_PID}.db"))
        try:
            for key, value, timestamp, _ in values:
                if value:
                    current, _ts = archive.read_value(key)
                    archive.write_value(key, current + value, timestamp)
        finally:
            archive.close()
        dead.unlink()  # after the archive holds its values: a crash in between double-counts
        removed += 1
    for gauge in directory.glob(f"gauge_*_{pid}.db"):
        with contextlib.suppress(FileNotFoundError):
            gauge.unlink()
            removed += 1
    return removed


def directory_size(directory: Path) -> tuple[int, int]:
    """(files, bytes allocated on disk) of the multiprocess directory, subfolders included."""
    files = [f for f in directory.rglob("*") if f.is_file()]
    return len(files), sum(os.stat(f).st_blocks * 512 for f in files)
