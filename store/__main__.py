"""Store administration: ``python -m store migrate|prune [--url URL]``.

``migrate`` brings a store's schema to the newest revision (PostgreSQL: Alembic ``upgrade
head`` under an advisory lock, as the predictor does at start; SQLite: the file and its tables).
``prune`` applies retention now (``TAGWATCH_RETENTION_DAYS``, ``TAGWATCH_FEATURE_RETENTION_DAYS``),
e.g. from cron. The URL defaults to ``TAGWATCH_STORE_URL``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from store.records import StoreError
from store.retention import run_retention
from store.sqlite import SQLiteStore, open_store
from tagger.settings import TagwatchSettings

log = logging.getLogger("store")


class StoreSettings(TagwatchSettings):
    store_url: str = "sqlite:///var/tagwatch.sqlite3"


def migrate(url: str) -> str:
    """Create or upgrade the schema of the store at ``url``; a one-line summary."""
    from store.sql import HEAD_REVISION, SQLStore, is_postgres_url

    store = open_store(url)  # a writer: creates the schema, or upgrades it under the lock
    try:
        if is_postgres_url(url):
            assert isinstance(store, SQLStore)
            return f"{store.display}: schema at revision {HEAD_REVISION} (head)"
        assert isinstance(store, SQLiteStore)
        return f"{store.path}: schema up to date"
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    settings = StoreSettings()
    p = argparse.ArgumentParser(prog="python -m store", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("migrate", "create or upgrade the schema"), ("prune", "apply retention")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("--url", default=settings.store_url,
                         help="store URL (default: TAGWATCH_STORE_URL)")  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "migrate":
            print(migrate(args.url))
            return 0
        store = open_store(args.url)
        try:
            result = run_retention(store, settings.retention_days, settings.feature_retention_days)
        finally:
            store.close()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is None:
        print("another process is pruning this store; nothing done")
    else:
        print(f"{result.blanked} rows blanked, {result.deleted} rows deleted "
              f"in {result.seconds:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
