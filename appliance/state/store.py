"""The state store: one SQLite file (WAL mode) for releases, plans, events, keys, jobs.

All writes go through :meth:`StateStore.transaction` so a change of the running stack
is atomic with its record. Each domain (releases, keys, jobs, ...) owns its tables and
declares them with :meth:`StateStore.ensure_schema`, which applies its DDL once per
schema version; no central file needs editing to add a table.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from appliance.errors import StateError

_CORE_DDL = """
CREATE TABLE IF NOT EXISTS schema_versions (
    domain TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    service TEXT,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StateStore:
    """A connection to the state database. Cheap to open; safe to use from one thread at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(_CORE_DDL)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open the state database: {exc}", where=str(self.path),
                             fix="check the file's permissions or set APPLIANCE_DATA_DIR") from None
        self._lock = threading.RLock()
        self._depth = 0
        self._domains: dict[str, int] = {}

    @classmethod
    def open_default(cls) -> "StateStore":
        from appliance.paths import state_path

        return cls(state_path())

    def close(self) -> None:
        self.conn.close()

    # ---- schema --------------------------------------------------------------------------
    def ensure_schema(self, domain: str, version: int, ddl: str) -> None:
        """Apply ``ddl`` (idempotent CREATE ... IF NOT EXISTS / ALTER) once per ``version``."""
        if self._domains.get(domain) == version:
            return
        row = self.conn.execute("SELECT version FROM schema_versions WHERE domain=?", (domain,)).fetchone()
        if row is None or row["version"] < version:
            with self.transaction():
                for statement in [s.strip() for s in ddl.split(";") if s.strip()]:
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO schema_versions(domain, version) VALUES(?, ?) "
                    "ON CONFLICT(domain) DO UPDATE SET version=excluded.version", (domain, version))
        self._domains[domain] = version

    # ---- transactions --------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE); nested calls join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    # ---- meta and events -----------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                              "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def add_event(self, kind: str, message: str, *, service: str | None = None,
                  data: dict[str, Any] | None = None) -> None:
        with self.transaction():
            self.conn.execute("INSERT INTO events(ts, kind, service, message, data) VALUES(?,?,?,?,?)",
                              (time.time(), kind, service, message,
                               json.dumps(data, sort_keys=True) if data else None))

    def events(self, *, kind: str | None = None, service: str | None = None, limit: int = 100) -> list[dict]:
        sql = "SELECT ts, kind, service, message, data FROM events"
        where, params = [], []
        if kind:
            where.append("kind=?")
            params.append(kind)
        if service:
            where.append("service=?")
            params.append(service)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [dict(r) | {"data": json.loads(r["data"]) if r["data"] else None}
                for r in self.conn.execute(sql, params)]
