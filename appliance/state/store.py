"""The state store: one SQLite file (WAL mode) for releases, plans, events, keys, jobs.

All writes go through :meth:`StateStore.transaction` so a change of the running stack
is atomic with its record. Each domain (releases, keys, jobs, ...) owns its tables and
declares them with :meth:`StateStore.ensure_schema`, which applies its DDL once per
schema version; no central file needs editing to add a table.

Every SQLite error -- at open, in a query, in a transaction -- surfaces as a
:class:`~appliance.errors.StateError` naming the database file (a locked database says so and
how long it waited), never as a raw ``sqlite3`` exception: the agent loop and the CLI handle
typed errors only, and a busy database must not kill a long-running process.
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


DEFAULT_BUSY_TIMEOUT_S = 30.0


def _state_error(exc: BaseException, path: Path, timeout_s: float) -> StateError:
    text = str(exc) or type(exc).__name__
    if "locked" in text or "busy" in text:
        return StateError(f"the state database is locked by another process (waited {timeout_s:g}s): {text}",
                          where=str(path), fix="wait for the other appliance command to finish, then retry")
    return StateError(f"state database error: {text}", where=str(path),
                      fix="check the file's permissions and free disk space (or set APPLIANCE_DATA_DIR)")


class _Conn:
    """The sqlite3 connection, with every error mapped to :class:`StateError`."""

    def __init__(self, raw: sqlite3.Connection, path: Path, timeout_s: float):
        self.raw, self._path, self._timeout_s = raw, path, timeout_s

    def execute(self, sql: str, params: tuple | dict | list = ()) -> sqlite3.Cursor:
        try:
            return self.raw.execute(sql, params)
        except sqlite3.Error as exc:
            raise _state_error(exc, self._path, self._timeout_s) from None

    def executescript(self, script: str) -> None:
        try:
            self.raw.executescript(script)
        except sqlite3.Error as exc:
            raise _state_error(exc, self._path, self._timeout_s) from None

    def close(self) -> None:
        self.raw.close()


class StateStore:
    """A connection to the state database. Cheap to open; safe to use from one thread at a time."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
        """``busy_timeout_s``: how long a statement waits for another process's write lock
        (the agent uses a short one so a long transaction elsewhere costs it one pass, not 30 s)."""
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            raw = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                  check_same_thread=False)
            raw.row_factory = sqlite3.Row
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute("PRAGMA foreign_keys=ON")
            raw.executescript(_CORE_DDL)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open the state database: {exc}", where=str(self.path),
                             fix="check the file's permissions or set APPLIANCE_DATA_DIR") from None
        self.conn = _Conn(raw, self.path, busy_timeout_s)
        self._lock = threading.RLock()
        self._depth = 0
        self._domains: dict[str, int] = {}

    @classmethod
    def open_default(cls, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> "StateStore":
        from appliance.paths import state_path

        return cls(state_path(), busy_timeout_s=busy_timeout_s)

    def close(self) -> None:
        self.conn.close()

    # ---- schema --------------------------------------------------------------------------
    def ensure_schema(self, domain: str, version: int, ddl: str) -> None:
        """Apply ``ddl`` (idempotent CREATE ... IF NOT EXISTS / ALTER) once per ``version``."""
        if self._domains.get(domain) == version:
            return
        row = self.one("SELECT version FROM schema_versions WHERE domain=?", (domain,))
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
    def transaction(self) -> Iterator[_Conn]:
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
                try:
                    self.conn.raw.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed statement may have ended the transaction already
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _state_error(exc, self.path, self.busy_timeout_s) from None

    def one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        """The first row of ``sql`` (None when there is none)."""
        try:
            return self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _state_error(exc, self.path, self.busy_timeout_s) from None

    # ---- meta and events -----------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key=?", (key,))
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
                for r in self.query(sql, tuple(params))]
