"""Loading labelled questions (CSV: title, optional body, space-separated tags, created_at)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

REQUIRED_COLUMNS = ("title", "tags", "created_at")


class DataError(ValueError):
    """The input file cannot be used; the message names the file and the field."""


def load_questions(path: Path) -> pd.DataFrame:
    """Read a question CSV, parse dates as UTC, split tags, and sort by time.

    Rows without a title, tags or a parseable date cannot be trained or evaluated on and are
    dropped (their count is in ``df.attrs['dropped']``).
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    df = pd.read_csv(path, dtype={"title": "string", "body": "string", "tags": "string"})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if "body" not in df.columns:
        df["body"] = ""
    n0 = len(df)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, errors="coerce", format="ISO8601")
    df["title"] = df["title"].fillna("").astype(str)
    df["body"] = df["body"].fillna("").astype(str)
    df["tags"] = df["tags"].fillna("").astype(str).str.lower().str.split()
    keep = df["created_at"].notna() & (df["title"].str.strip() != "") & (df["tags"].str.len() > 0)
    df = df.loc[keep].sort_values("created_at", kind="stable").reset_index(drop=True)
    df = df.astype({"title": object, "body": object})
    df.attrs["dropped"] = n0 - len(df)
    return df


def questions_of(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(title, body) pairs, the input of the pipelines."""
    return list(zip(df["title"].tolist(), df["body"].tolist(), strict=True))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
