"""A bounded metrics history in the state: what the admin console draws its charts from.

Why here and not in Prometheus: the box must show "the last hour / the last week" with nothing
else installed, and Prometheus' endpoint only has the present. The agent already sees every
number once per pass (hardware usage, service states, the gateway's counters), so it records
them in the state SQLite, in one transaction per pass, and the console reads them back.

Why bounded, and how:

* two tiers in one table: tier 0 holds the raw points (one per series per agent pass) for
  :data:`RAW_KEEP_S`; tier 1 holds :data:`BUCKET_S` averages for :data:`ROLLUP_KEEP_S`. At the
  default 15 s interval a series costs at most 480 raw rows and 2016 rollup rows;
* housekeeping runs only when a bucket has closed since the last time (once per 5 minutes, not
  every pass): each closed bucket's raw points are averaged into tier 1, then raw points older
  than :data:`RAW_KEEP_S` and rollups older than :data:`ROLLUP_KEEP_S` are deleted. A small
  mark (``history_marks.rolled_until_ts``) says up to where raw points were rolled up, so no
  bucket is averaged twice and a pass never rescans the whole table;
* one record call writes at most :data:`MAX_SERIES` series, names of at most
  :data:`MAX_NAME_CHARS` characters, and finite numbers only: whatever the inputs hold (a new
  key per request, a broken sensor reporting NaN), the table stays bounded and readable.

Everything goes through :class:`~appliance.state.store.StateStore` (errors are typed
``StateError``); the agent logs one and loses that pass's sample, never its loop.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger("appliance.agent.history")

RAW_KEEP_S = 2 * 3600          # raw points (tier 0): one per agent pass
BUCKET_S = 300                 # a rollup (tier 1) averages one 5-minute bucket
ROLLUP_KEEP_S = 7 * 86400      # rollups are kept a week
MAX_SERIES = 512               # series written by one record call (more are dropped)
MAX_NAME_CHARS = 200           # longer series names are dropped
MAX_NAMES_LISTED = 4096        # names_like() answers at most this many names

RAW, ROLLUP = 0, 1
_MARK = "rolled_until_ts"      # raw points before this (bucket-aligned) ts are rolled up
_ROWS_PER_INSERT = 200         # 800 parameters: under SQLite's oldest limit of 999 per statement

_DDL = """
CREATE TABLE IF NOT EXISTS history (
    tier INTEGER NOT NULL,
    series TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (tier, series, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_marks (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
)
"""


def _bucket_start(ts: float) -> float:
    return math.floor(ts / BUCKET_S) * BUCKET_S


def _number(value) -> float | None:
    """``value`` as a finite float, else None (None, NaN, inf, strings, bools: dropped, not guessed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


class History:
    """The metrics history in ``store``. Cheap to create: the schema is applied on first use,
    so a locked state at agent start costs the first sample, not the agent."""

    def __init__(self, store):
        self.store = store
        self._warned: set[str] = set()

    def _ready(self):
        self.store.ensure_schema("history", 1, _DDL)
        return self.store

    def _warn_once(self, what: str, message: str, *args) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)

    # ---- writing --------------------------------------------------------------------------
    def _clean(self, samples: dict[str, float]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for name, value in samples.items():
            if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
                self._warn_once("name", "history: dropping series with an empty or over-%d-character name "
                                "(first: %.60r)", MAX_NAME_CHARS, name)
                continue
            number = _number(value)
            if number is None:
                continue  # a missing or broken reading: a gap in the chart, not a zero
            if len(out) >= MAX_SERIES:
                self._warn_once("max", "history: more than %d series in one pass; the rest are dropped "
                                "(from %r on)", MAX_SERIES, name)
                break
            out.append((name, number))
        return out

    def record(self, samples: dict[str, float], *, ts: float | None = None) -> int:
        """Write one pass's samples at ``ts`` (default now) and, when a bucket has closed, roll up
        and expire; all in one transaction. Returns the number of points written."""
        now = time.time() if ts is None else float(ts)
        if not math.isfinite(now):
            raise ValueError(f"history: ts must be a finite number, got {ts!r}")
        points = self._clean(samples)
        store = self._ready()
        with store.transaction() as conn:
            for i in range(0, len(points), _ROWS_PER_INSERT):  # through the store: errors stay typed
                chunk = points[i:i + _ROWS_PER_INSERT]
                conn.execute("INSERT OR REPLACE INTO history(tier, series, ts, value) VALUES "
                             + ",".join(["(?,?,?,?)"] * len(chunk)),
                             [x for name, value in chunk for x in (RAW, name, now, value)])
            self._housekeep(conn, now)
        return len(points)

    def _housekeep(self, conn, now: float) -> None:
        """Roll up every closed bucket not rolled up yet, then expire (only when one closed)."""
        closed_until = _bucket_start(now)
        row = conn.execute("SELECT value FROM history_marks WHERE name=?", (_MARK,)).fetchone()
        done = row["value"] if row else None
        if done is not None and done >= closed_until:
            return  # same bucket as the last pass (or the clock went back): nothing closed
        t = time.monotonic()
        conn.execute(
            "INSERT OR REPLACE INTO history(tier, series, ts, value) "
            "SELECT ?, series, CAST(ts / ? AS INTEGER) * ?, AVG(value) FROM history "
            "WHERE tier=? AND ts >= ? AND ts < ? GROUP BY series, CAST(ts / ? AS INTEGER)",
            (ROLLUP, BUCKET_S, BUCKET_S, RAW, done if done is not None else 0.0, closed_until, BUCKET_S))
        conn.execute("DELETE FROM history WHERE tier=? AND ts < ?", (RAW, now - RAW_KEEP_S))
        conn.execute("DELETE FROM history WHERE tier=? AND ts < ?", (ROLLUP, now - ROLLUP_KEEP_S))
        conn.execute("INSERT INTO history_marks(name, value) VALUES(?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (_MARK, closed_until))
        log.debug("history: rolled up until %.0f in %.3f s", closed_until, time.monotonic() - t)

    # ---- reading --------------------------------------------------------------------------
    def names_like(self, prefix: str = "") -> list[str]:
        """Series names starting with ``prefix`` in either tier, sorted. One index seek per name
        (a skip scan), so a week of rollups is never read to list a few dozen names."""
        store = self._ready()
        names: set[str] = set()
        for tier in (RAW, ROLLUP):
            after = None
            while len(names) < MAX_NAMES_LISTED:
                if after is None:
                    row = store.one("SELECT series FROM history WHERE tier=? AND series >= ? "
                                    "ORDER BY series LIMIT 1", (tier, prefix))
                else:
                    row = store.one("SELECT series FROM history WHERE tier=? AND series > ? "
                                    "ORDER BY series LIMIT 1", (tier, after))
                if row is None or not row["series"].startswith(prefix):
                    break
                after = row["series"]
                names.add(after)
        return sorted(names)[:MAX_NAMES_LISTED]

    def series(self, names: list[str] | None = None, *, prefix: str | None = None, since_s: float = 3600,
               now: float | None = None, max_points: int = 360) -> dict[str, list[tuple[float, float]]]:
        """The points of the window ``[now - since_s, now]`` per series, in time order.

        ``names`` picks series (``prefix`` then narrows them); without ``names``, every series
        starting with ``prefix`` (all of them without one). Within :data:`RAW_KEEP_S` the raw
        points; a longer window reads the rollups up to where raw points were rolled up and
        the raw points after. A series with more than ``max_points`` points is averaged into
        ``max_points`` consecutive groups of (nearly) equal size, so a chart gets what it
        can draw. A series without points in the window is left out."""
        now = time.time() if now is None else float(now)
        start = now - float(since_s)
        max_points = max(1, int(max_points))
        store = self._ready()
        if names is None:
            names = self.names_like(prefix or "")
        elif prefix:
            names = [n for n in names if n.startswith(prefix)]
        names = list(dict.fromkeys(names))[:MAX_NAMES_LISTED]
        raw_from = start
        if since_s > RAW_KEEP_S:
            row = store.one("SELECT value FROM history_marks WHERE name=?", (_MARK,))
            raw_from = max(start, row["value"]) if row else start
        out: dict[str, list[tuple[float, float]]] = {}
        for name in names:
            points: list[tuple[float, float]] = []
            if raw_from > start:
                points += [(r["ts"], r["value"]) for r in store.query(
                    "SELECT ts, value FROM history WHERE tier=? AND series=? AND ts >= ? AND ts < ? ORDER BY ts",
                    (ROLLUP, name, start, raw_from))]
            points += [(r["ts"], r["value"]) for r in store.query(
                "SELECT ts, value FROM history WHERE tier=? AND series=? AND ts >= ? AND ts <= ? ORDER BY ts",
                (RAW, name, raw_from, now))]
            if points:
                out[name] = downsample(points, max_points)
        return out


def downsample(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """``points`` (time order) averaged into ``max_points`` consecutive groups of nearly equal
    size (time and value both averaged); unchanged when there are no more than that."""
    n = len(points)
    if n <= max_points:
        return points
    out = []
    for i in range(max_points):
        group = points[i * n // max_points:(i + 1) * n // max_points]
        out.append((sum(p[0] for p in group) / len(group), sum(p[1] for p in group) / len(group)))
    return out


def samples_from(inventory, services, usage, notes: dict[str, dict] | None = None) -> dict[str, float]:
    """One pass's samples from what the agent already holds (no extra reads):

    * per accelerator ``acc.<vendor>.<index>.memory_used_mib``, ``.memory_total_mib``,
      ``.utilization_pct``, ``.temperature_c``, ``.power_w`` (those the detection knows);
    * per service ``svc.<name>.up`` (1 running and healthy or without a health check, else 0)
      and ``svc.<name>.restarts`` (how often the agent restarted or recreated it; with ``notes``);
    * with ``usage`` (key id -> KeyUsage; None or empty: no gateway counters this pass)
      the cumulative totals ``gw.requests``, ``gw.prompt_tokens``, ``gw.completion_tokens``,
      ``gw.denied`` and per key ``gw.key.<key_id>.requests`` and ``.tokens`` (prompt+completion).
    """
    out: dict[str, float] = {}
    for a in (inventory.accelerators if inventory is not None else []):
        base = f"acc.{a.vendor}.{a.index}"
        u = a.usage
        for field, value in (("memory_used_mib", u.memory_used_mib if u else None),
                             ("memory_total_mib", a.memory_mib),
                             ("utilization_pct", u.utilization_pct if u else None),
                             ("temperature_c", u.temperature_c if u else None),
                             ("power_w", u.power_w if u else None)):
            if value is not None:
                out[f"{base}.{field}"] = float(value)
    for s in services or []:
        running = s.state == "running"
        out[f"svc.{s.name}.up"] = 1.0 if running and s.health in ("healthy", None) else 0.0
        restarts = getattr(s, "restarts", None)
        if restarts is None and notes is not None:
            restarts = (notes.get(s.name) or {}).get("restarts") or 0
        if restarts is not None:
            out[f"svc.{s.name}.restarts"] = float(restarts)
    if usage:  # None: unreadable; empty: no usage file yet (no gateway, or nothing counted)
        totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "denied": 0}
        per_key: dict[str, float] = {}
        for key_id, u in sorted(usage.items()):
            for k in totals:
                totals[k] += getattr(u, k)
            per_key[f"gw.key.{key_id}.requests"] = float(u.requests)
            per_key[f"gw.key.{key_id}.tokens"] = float(u.prompt_tokens + u.completion_tokens)
        out.update({f"gw.{k}": float(v) for k, v in totals.items()})
        out.update(per_key)
    return out


def node_samples() -> dict[str, float]:
    """The host itself, for a box with no accelerator as much as for one with eight:
    ``node.cpu_pct`` (all cores, since the previous pass: psutil keeps the last reading),
    ``node.load1``, ``node.memory_used_mib`` and ``node.memory_total_mib``."""
    import os

    import psutil

    mem = psutil.virtual_memory()
    out = {"node.cpu_pct": float(psutil.cpu_percent(interval=None)),
           "node.memory_used_mib": float((mem.total - mem.available) // (1 << 20)),
           "node.memory_total_mib": float(mem.total // (1 << 20))}
    try:
        out["node.load1"] = float(os.getloadavg()[0])
    except OSError:
        pass
    return out


def job_samples(jobs) -> dict[str, float]:
    """Running fine-tuning jobs: ``job.<id>.loss``, ``job.<id>.step`` (from the progress the
    supervision parsed from the job's log this pass) -- the console's loss curves."""
    out: dict[str, float] = {}
    for job in jobs:
        p = job.progress
        if p.loss is not None:
            out[f"job.{job.id}.loss"] = float(p.loss)
        if p.step is not None:
            out[f"job.{job.id}.step"] = float(p.step)
    return out


def model_samples(models: dict | None) -> dict[str, float]:
    """Per served model (``read_model_usage()``): ``gw.model.<name>.requests`` and ``.tokens``
    (prompt + completion), cumulative like the per-key counters."""
    out: dict[str, float] = {}
    for name, u in sorted((models or {}).items()):
        out[f"gw.model.{name}.requests"] = float(u.requests)
        out[f"gw.model.{name}.tokens"] = float(u.prompt_tokens + u.completion_tokens)
    return out


def user_samples(users: dict | None) -> dict[str, float]:
    """Per signed-in user the apps called for (``read_user_usage()``): ``gw.user.<name>.requests``
    and ``.tokens`` (prompt + completion), cumulative."""
    out: dict[str, float] = {}
    for name, u in sorted((users or {}).items()):
        out[f"gw.user.{name}.requests"] = float(u.requests)
        out[f"gw.user.{name}.tokens"] = float(u.prompt_tokens + u.completion_tokens)
    return out
