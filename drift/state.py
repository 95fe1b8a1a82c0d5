"""Saved per-bin counts between runs, so a daily run only reads rows it has not seen."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from drift.histograms import BinCounts

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass
class DriftState:
    fingerprint: str
    last_seq: int = 0
    bins: dict[int, BinCounts] = field(default_factory=dict)
    # which store the counts come from (SQLiteStore.identity): a store recreated under the
    # state starts its seq again, and its rows would never be read
    store_id: str | None = None


BIN_INT_KEYS = ("rows", "fb_questions", "fb_tags", "fb_unknown")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_bin(b: object) -> BinCounts:
    """A bin of the saved file, checked: valid JSON of the wrong shape must not crash runs."""
    if not isinstance(b, dict) or not all(_is_int(b.get(k)) for k in BIN_INT_KEYS):
        raise TypeError("a bin is not {rows, fb_*: counts, hist}")
    hist = b.get("hist")
    if not isinstance(hist, dict) or not all(
        isinstance(h, dict) and all(isinstance(k, str) and _is_int(n) for k, n in h.items())
        for h in hist.values()
    ):
        raise TypeError("a bin's hist is not {feature: {key: count}}")
    return b


def load_state(state_dir: Path, fingerprint: str, store_id: str | None = None) -> DriftState:
    """The saved counts, or a fresh state (cold start) if none, unreadable, of the wrong shape,
    for other inputs or for another store."""
    path = Path(state_dir) / STATE_FILE
    fresh = DriftState(fingerprint, store_id=store_id)
    if not path.is_file():
        log.info("no saved histograms in %s: cold start", path)
        return fresh
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        fp, last_seq, bins = raw["fingerprint"], raw["last_seq"], raw["bins"]
        saved_store = raw.get("store_id")
        if not isinstance(fp, str) or not _is_int(last_seq) or not isinstance(bins, dict):
            raise TypeError("fingerprint, last_seq or bins of the wrong type")
        if saved_store is not None and not isinstance(saved_store, str):
            raise TypeError("store_id is not a string")
        state = DriftState(
            fingerprint=fp,
            last_seq=last_seq,
            bins={int(k): _check_bin(v) for k, v in bins.items()},
            store_id=saved_store,
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        log.warning("%s: unreadable saved histograms (%s): cold start", path, exc)
        return fresh
    if state.fingerprint != fingerprint:
        log.info("%s: model, baseline or binning changed: cold start", path)
        return fresh
    if store_id is not None and state.store_id != store_id:
        log.warning(
            "%s: saved for store %s, the store is now %s (recreated?): cold start",
            path,
            state.store_id or "(unknown)",
            store_id,
        )
        return fresh
    return state


def save_state(state_dir: Path, state: DriftState) -> Path:
    """Write atomically: a crash mid-write leaves the previous state, never half a file."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = state_dir / f".{STATE_FILE}.tmp"
    payload = {
        "fingerprint": state.fingerprint,
        "last_seq": state.last_seq,
        "store_id": state.store_id,
        "bins": {str(k): v for k, v in sorted(state.bins.items())},
    }
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)
    return path
