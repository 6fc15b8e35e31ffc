"""The gateway's decisions, without HTTP: who a key is, what it may call, how much, and routing.

Stdlib only (the gateway image is the pyrt runtime plus this directory). Everything here
is read from two files in the config dir, which the appliance CLI and runtime write
atomically (write temp + rename):

* ``keys.json`` -- ``{"format": "appliance-gateway-keys/1", "keys": {<key_id>: {"name",
  "salt", "hash", "models", "expires_at", "rpm", "tokens_per_day"}}}``; written by
  ``appliance keys``. A key is ``apk_<key_id>_<secret>``; the file holds only
  ``HMAC-SHA256(salt, key)``, so verifying costs one HMAC (~2 µs) and needs no cache.
* ``routes.json`` -- served model name -> upstream base URL, written by the runtime.
  Accepted shapes: ``{"models": {name: url | {"upstream": url, "service": name, ...}}}``,
  ``{"routes": ...}`` the same, or a flat ``{name: url}``.
* ``upstream_keys.json`` (optional) -- ``{"format": "appliance-upstream-keys/1", "services":
  {<service>: <secret>}}``: the secret each engine service requires, sent as ``Authorization:
  Bearer`` to the engine a route's ``service`` names (engines answer nothing without it).

Requests stat both files at most every 0.1 s, and a :class:`Watcher` thread every
``poll_s`` (1 s) when idle; new tables are swapped in when a file's (mtime, size, inode)
changes, which is how a new or revoked key takes effect without a restart. Usage counters
are kept in memory and flushed to ``usage.json`` every couple of seconds so ``appliance keys list``
can show them and daily token quotas survive restarts.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import hmac
import json
import os
import re
import threading
import time
from typing import NamedTuple

MAX_USERS = 10_000  # per-user usage entries kept at most
MAX_MODELS = 1_000  # per-model usage entries kept at most (served names come from the route table)
KEY_RE = re.compile(r"^apk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")


class KeyRecord:
    __slots__ = ("key_id", "name", "salt", "hash", "models", "expires_at", "rpm", "tokens_per_day",
                 "acts_for_users")

    def __init__(self, key_id: str, doc: dict):
        self.key_id = key_id
        self.name = str(doc.get("name") or key_id)
        self.salt = bytes.fromhex(doc["salt"])
        self.hash = str(doc["hash"])
        self.models = [str(m) for m in (doc.get("models") or [])]
        self.expires_at = doc.get("expires_at")
        self.rpm = doc.get("rpm")
        self.tokens_per_day = doc.get("tokens_per_day")
        # an app's key: it calls on behalf of its signed-in users, and only its X-Appliance-User
        # header is taken as the user to count usage for (any other caller could claim any name)
        self.acts_for_users = doc.get("acts_for_users") is True

    def allows(self, model: str) -> bool:
        """Scope check: an empty scope allows every model; entries may use * and ?."""
        if not self.models:
            return True
        return any(m == model or fnmatch.fnmatchcase(model, m) for m in self.models)


class Denied(Exception):
    """A request the gateway refuses: HTTP status, OpenAI-style error code and message."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.param = param  # the request field at fault, when there is one


def load_keys(path: str) -> dict[str, KeyRecord]:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    out = {}
    for key_id, rec in (doc.get("keys") or {}).items():
        try:
            out[key_id] = KeyRecord(key_id, rec)
        except (KeyError, ValueError, TypeError):
            continue  # one malformed record never disables the others
    return out


def _normalize_upstream(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if "://" not in url:
        url = "http://" + url
    return url


class Route(NamedTuple):
    """Where a served model is: the engine's base URL and the service its secret is kept under;
    ``replicas``: the same model's other engines (a cluster: other nodes), tried in turn."""

    upstream: str
    service: str | None = None
    replicas: tuple = ()

    def all(self) -> tuple:
        """Every engine of the model: this route first, then its replicas."""
        return (Route(self.upstream, self.service),) + self.replicas


MAX_REPLICAS = 32


def load_upstream_keys(path: str) -> dict[str, str]:
    """service -> secret from ``upstream_keys.json`` (entries that are not two strings are skipped)."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    services = doc.get("services") if isinstance(doc, dict) else None
    return {k: v for k, v in (services or {}).items() if isinstance(k, str) and isinstance(v, str) and v}


def load_routes(path: str) -> dict[str, Route]:
    """Served model name -> :class:`Route` (base URL scheme://host:port, no trailing /v1)."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    table = doc.get("models", doc.get("routes", doc)) if isinstance(doc, dict) else {}
    out = {}
    if isinstance(table, list):  # [{"model": name, "upstream": url}, ...]
        table = {e.get("model") or e.get("name"): e for e in table if isinstance(e, dict)}
    for name, target in (table or {}).items():
        if not isinstance(name, str) or name in ("format", "generated_at"):
            continue
        service = None
        replicas: list[Route] = []
        if isinstance(target, dict):
            service = target.get("service") if isinstance(target.get("service"), str) else None
            for r in target.get("replicas") or [] if isinstance(target.get("replicas"), list) else []:
                if isinstance(r, dict) and isinstance(r.get("upstream"), str) and r["upstream"]:
                    replicas.append(Route(_normalize_upstream(r["upstream"]),
                                          r.get("service") if isinstance(r.get("service"), str) else None))
            target = target.get("upstream") or target.get("url") or target.get("base_url")
        if isinstance(target, str) and target:
            out[name] = Route(_normalize_upstream(target), service, tuple(replicas[:MAX_REPLICAS]))
    return out


def file_signature(path: str) -> tuple:
    """(mtime, size, inode) of a config file, or ("missing",): a file the CLI replaced atomically
    (a new inode) or rewrote is seen as changed, with one stat() and no read."""
    try:
        st = os.stat(path)
    except OSError:
        return ("missing",)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Config:
    """The current key and route tables (replaced wholesale on reload, read lock-free)."""

    def __init__(self, config_dir: str):
        self.dir = config_dir
        self.keys_path = os.path.join(config_dir, "keys.json")
        self.routes_path = os.path.join(config_dir, "routes.json")
        self.upstream_keys_path = os.path.join(config_dir, "upstream_keys.json")
        self.keys: dict[str, KeyRecord] = {}
        self.routes: dict[str, Route] = {}
        self.upstream_keys: dict[str, str] = {}
        self._sig: dict[str, tuple | None] = {"keys": None, "routes": None, "upstream_keys": None}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._checked = 0.0
        self.on_change = None  # callable(list[str]) for the log

    def maybe_reload(self, min_interval_s: float = 0.1) -> None:
        """Called per request: stat the files at most every ``min_interval_s``, reload on change.

        Two stat() calls cost microseconds, so under traffic a new or revoked key takes
        effect within ~0.1 s of ``appliance keys``; the watcher thread covers idle times.
        """
        now = time.monotonic()
        if now - self._checked < min_interval_s or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked = now
            changed = self._reload_locked()
        finally:
            self._lock.release()
        if changed and self.on_change:
            self.on_change(changed)

    _signature = staticmethod(file_signature)

    def reload(self) -> list[str]:
        """Re-read files whose signature changed; returns what changed (for the log)."""
        with self._lock:
            self._checked = time.monotonic()
            return self._reload_locked()

    def _reload_locked(self) -> list[str]:
        changed = []
        for what, path, loader in (("keys", self.keys_path, load_keys), ("routes", self.routes_path, load_routes),
                                   ("upstream_keys", self.upstream_keys_path, load_upstream_keys)):
            sig = self._signature(path)
            if sig == self._sig[what]:
                continue
            if sig == ("missing",):
                value = {}  # no keys file = no valid key (fail closed)
                self.errors.pop(what, None)
            else:
                try:
                    value = loader(path)
                    self.errors.pop(what, None)
                except (OSError, ValueError) as exc:
                    # keep the previous table for a corrupt routes (or engine secrets) file, but
                    # never keep keys that may have been revoked: a bad keys file means no keys.
                    self.errors[what] = f"{type(exc).__name__}: {exc}"
                    if what != "keys":
                        self._sig[what] = sig
                        changed.append(f"{what}: unreadable, kept previous")
                        continue
                    value = {}
            setattr(self, what, value)
            self._sig[what] = sig
            changed.append(f"{what}: {len(value)}")
        return changed

    def authenticate(self, presented: str | None, now: float) -> KeyRecord:
        """The key record for a presented key, or Denied(401)."""
        if not presented:
            raise Denied(401, "missing_api_key", "an API key is required (Authorization: Bearer <key>)")
        m = KEY_RE.match(presented)
        rec = self.keys.get(m.group(1)) if m else None
        if rec is None and m:
            # A key created a moment ago may not be loaded yet (reloads are throttled):
            # re-check the files now, so a new key works on its very first request.
            self.reload()
            rec = self.keys.get(m.group(1))
        if rec is None or not hmac.compare_digest(
                hmac.new(rec.salt, presented.encode(), hashlib.sha256).hexdigest(), rec.hash):
            raise Denied(401, "invalid_api_key", "invalid API key")
        if rec.expires_at is not None and now >= float(rec.expires_at):
            raise Denied(401, "expired_api_key", "this API key has expired")
        return rec

    def upstream_key(self, route: Route, fallback: str = "") -> str:
        """The secret to send to ``route``'s engine: its service's, else ``fallback``
        (GATEWAY_UPSTREAM_API_KEY, one key for every engine)."""
        return (self.upstream_keys.get(route.service) if route.service else None) or fallback


class Usage:
    """Per-key counters, request-rate windows and daily token budgets.

    Rate limit: a sliding 60 s window of request times per key (a deque never longer
    than the key's rpm), exact and O(1) per request. Token quota: tokens counted from
    the upstream's ``usage`` per UTC day; a request is refused once the day's count has
    reached the quota (the request that crosses it completes -- its size is unknown
    until it ran).
    """

    def __init__(self, path: str | None):
        self.path = path
        self.lock = threading.Lock()
        self.keys: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.models: dict[str, dict] = {}
        self.windows: dict[str, collections.deque] = {}
        self.dirty = False
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    doc = json.load(fh)
                self.keys = {k: v for k, v in (doc.get("keys") or {}).items() if isinstance(v, dict)}
                self.users = {k: v for k, v in (doc.get("users") or {}).items() if isinstance(v, dict)}
                self.models = {k: v for k, v in (doc.get("models") or {}).items() if isinstance(v, dict)}
            except (OSError, ValueError, AttributeError):
                self.keys, self.users, self.models = {}, {}, {}

    @staticmethod
    def today(now: float) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(now))

    def _entry(self, rec: KeyRecord) -> dict:
        e = self.keys.get(rec.key_id)
        if e is None:
            e = self.keys[rec.key_id] = {"name": rec.name, "requests": 0, "prompt_tokens": 0,
                                         "completion_tokens": 0, "denied": 0, "day": "", "day_tokens": 0,
                                         "last_used_at": None}
        return e

    def _user(self, name: str | None) -> dict | None:
        """The usage entry of a signed-in user an app called for (None: not an app's call).
        Bounded: names an app sends come from its sessions, but a table must not grow without end."""
        if not name:
            return None
        e = self.users.get(name)
        if e is None:
            if len(self.users) >= MAX_USERS:
                return None
            e = self.users[name] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                    "last_used_at": None}
        return e

    def _model(self, name: str | None) -> dict | None:
        """The usage entry of a served model (None: no model, or the table is full)."""
        if not name:
            return None
        e = self.models.get(name)
        if e is None:
            if len(self.models) >= MAX_MODELS:
                return None
            e = self.models[name] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "day": "",
                                     "day_requests": 0, "day_tokens": 0, "last_used_at": None}
        return e

    @staticmethod
    def _roll_day(e: dict, day: str) -> None:
        if e.get("day") != day:
            e["day"], e["day_requests"], e["day_tokens"] = day, 0, 0

    def admit(self, rec: KeyRecord, now: float) -> None:
        """Count one request against the rate limit and check the daily token quota -- from the
        request's head, before its body is read (a request refused later still used its turn)."""
        with self.lock:
            e = self._entry(rec)
            if rec.rpm:
                win = self.windows.get(rec.key_id)
                if win is None:
                    win = self.windows[rec.key_id] = collections.deque()
                while win and now - win[0] >= 60.0:
                    win.popleft()
                if len(win) >= int(rec.rpm):
                    e["denied"] += 1
                    self.dirty = True
                    raise Denied(429, "rate_limit_exceeded",
                                 f"rate limit of {rec.rpm} requests per minute reached",
                                 retry_after_s=max(1, int(60.0 - (now - win[0])) + 1))
                win.append(now)
            if rec.tokens_per_day:
                day = self.today(now)
                used = e["day_tokens"] if e["day"] == day else 0
                if used >= int(rec.tokens_per_day):
                    e["denied"] += 1
                    self.dirty = True
                    raise Denied(429, "token_quota_exceeded",
                                 f"daily token quota of {rec.tokens_per_day} reached", retry_after_s=3600)
            self.dirty = True

    def served(self, rec: KeyRecord, now: float, user: str | None = None, model: str | None = None) -> None:
        """One request passed every check and goes to an engine (``user``: the signed-in user an
        app's key called for, counted next to the key; ``model``: the served model it names)."""
        with self.lock:
            e = self._entry(rec)
            e["requests"] += 1
            e["last_used_at"] = now
            u = self._user(user)
            if u is not None:
                u["requests"] += 1
                u["last_used_at"] = now
            m = self._model(model)
            if m is not None:
                self._roll_day(m, self.today(now))
                m["requests"] += 1
                m["day_requests"] += 1
                m["last_used_at"] = now
            self.dirty = True

    def deny(self, rec: KeyRecord) -> None:
        with self.lock:
            self._entry(rec)["denied"] += 1
            self.dirty = True

    def add_tokens(self, rec: KeyRecord, prompt: int, completion: int, now: float, user: str | None = None,
                   model: str | None = None) -> None:
        if not (prompt or completion):
            return
        with self.lock:
            u = self._user(user)
            if u is not None:
                u["prompt_tokens"] += prompt
                u["completion_tokens"] += completion
            e = self._entry(rec)
            day = self.today(now)
            m = self._model(model)
            if m is not None:
                self._roll_day(m, day)
                m["prompt_tokens"] += prompt
                m["completion_tokens"] += completion
                m["day_tokens"] += prompt + completion
            if e["day"] != day:
                e["day"], e["day_tokens"] = day, 0
            e["prompt_tokens"] += prompt
            e["completion_tokens"] += completion
            e["day_tokens"] += prompt + completion
            self.dirty = True

    def flush(self) -> bool:
        """Write usage.json atomically if anything changed; False when it could not."""
        if not self.path:
            return True
        with self.lock:
            if not self.dirty:
                return True
            doc = json.dumps({"format": "appliance-gateway-usage/1", "updated_at": time.time(),
                              "keys": self.keys, "users": self.users, "models": self.models}, sort_keys=True)
            self.dirty = False
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(doc)
            os.replace(tmp, self.path)
            return True
        except OSError:
            with self.lock:
                self.dirty = True
            return False


class Watcher(threading.Thread):
    """Reloads the config files every ``poll_s`` and flushes usage every ``flush_s``."""

    def __init__(self, config: Config, usage: Usage, log, poll_s: float = 1.0, flush_s: float = 2.0):
        super().__init__(name="gateway-watcher", daemon=True)
        self.config, self.usage, self.log = config, usage, log
        self.poll_s, self.flush_s = poll_s, flush_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        last_flush = time.monotonic()
        while not self.stop_event.wait(self.poll_s):
            try:
                for change in self.config.reload():
                    self.log({"event": "reload", "what": change})
            except Exception as exc:  # never let the watcher die
                self.log({"event": "reload_error", "error": f"{type(exc).__name__}: {exc}"})
            if time.monotonic() - last_flush >= self.flush_s:
                self.usage.flush()
                last_flush = time.monotonic()
        self.usage.flush()


def usage_from_json(body: bytes) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) from an OpenAI response body, or (0, 0)."""
    try:
        u = json.loads(body).get("usage") or {}
    except (ValueError, AttributeError):
        return 0, 0
    return _usage_pair(u)


def _usage_pair(u) -> tuple[int, int]:
    if not isinstance(u, dict):
        return 0, 0
    prompt = int(u.get("prompt_tokens") or u.get("input_tokens") or 0)
    completion = int(u.get("completion_tokens") or u.get("output_tokens") or 0)
    if not (prompt or completion) and u.get("total_tokens"):
        prompt = int(u["total_tokens"])
    return prompt, completion


class StreamMeter:
    """Counts tokens in a Server-Sent-Events stream passing through, without buffering it.

    Uses the ``usage`` object when the engine sends one (vLLM/SGLang with
    ``stream_options.include_usage``); otherwise counts one completion token per content
    chunk, which is what OpenAI-style engines emit.
    """

    def __init__(self):
        self.carry = b""
        self.chunks = 0
        self.usage: tuple[int, int] | None = None

    def feed(self, data: bytes) -> None:
        buf = self.carry + data
        lines = buf.split(b"\n")
        self.carry = lines.pop()
        if len(self.carry) > 1 << 20:
            self.carry = b""
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload.startswith(b"{"):
                continue
            if b'"usage"' in payload and b'"usage":null' not in payload.replace(b" ", b""):
                try:
                    pair = _usage_pair(json.loads(payload).get("usage"))
                    if pair != (0, 0):
                        self.usage = pair
                        continue
                except ValueError:
                    pass
            if b'"content"' in payload or b'"text"' in payload:
                self.chunks += 1

    def result(self) -> tuple[int, int]:
        return self.usage if self.usage else (0, self.chunks)
