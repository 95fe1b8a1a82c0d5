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


def load_state(state_dir: Path, fingerprint: str) -> DriftState:
    """The saved counts, or a fresh state (cold start) if none, unreadable or for other inputs."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        log.info("no saved histograms in %s: cold start", path)
        return DriftState(fingerprint)
    try:
        raw = json.loads(path.read_text())
        state = DriftState(
            fingerprint=str(raw["fingerprint"]),
            last_seq=int(raw["last_seq"]),
            bins={int(k): v for k, v in raw["bins"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable saved histograms (%s): cold start", path, exc)
        return DriftState(fingerprint)
    if state.fingerprint != fingerprint:
        log.info("%s: model, baseline or binning changed: cold start", path)
        return DriftState(fingerprint)
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
        "bins": {str(k): v for k, v in sorted(state.bins.items())},
    }
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)
    return path
