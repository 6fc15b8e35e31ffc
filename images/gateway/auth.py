"""Sign-in for the box's apps, without HTTP: passwords, one-time links, signed sessions, throttling.

Standard library plus argon2-cffi (carried into the gateway image, packages.txt). Everything is
read from the gateway's config dir, which ``appliance users`` and ``init`` write atomically
(appliance/gateway/users.py):

* ``users.json`` -- ``{"format": "appliance-gateway-users/1", "users": {name: {"role", "hash",
  "epoch"}}}``; ``hash`` is an argon2id PHC string (or null: that user signs in by link only);
* ``links.json`` -- ``{"format": "appliance-gateway-links/1", "links": {sha256(token): {"user",
  "expires_at"}}}``: the unused, unexpired one-time links;
* ``session.key`` -- 32+ random bytes that sign session tokens (missing: nobody can sign in).

The gateway writes two files of its own there (atomically, 0600), so one-time stays one-time
and sign-out stays signed out across restarts and while two gateways run during a blue/green
switch (updates are merged under an exclusive ``flock``):

* ``links-used.json`` -- the links redeemed here (the CLI takes them over into the state);
* ``sessions-revoked.json`` -- sessions ended by sign-out, until they would have expired.

A session token is stateless: ``v1.<base64url(JSON {"u", "r", "e", "iat", "exp", "n"})>.<base64url(
HMAC-SHA256(session.key, "v1." + payload))>``. It is valid while unexpired (12 h), the user still
exists with the same epoch (``users passwd`` / ``remove`` bump it) and it was not signed out.
Checking one costs one HMAC, so the apps may ask for every request.

Files are re-read when their (mtime, size, inode) changes, stat-ed at most every 0.1 s, like
gwcore.Config. A corrupt users file means no users (fail closed).

Throttling: at most ``max_failures`` (5) failed sign-ins per user name and per client address
in any ``window_s`` (60 s); beyond, :class:`Throttled` is raised before any password is checked.
Unknown names are checked against a dummy hash, so they take as long as known ones.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time

from gwcore import file_signature

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None

USERS_FORMAT = "appliance-gateway-users/1"
LINKS_FORMAT = "appliance-gateway-links/1"
LINKS_USED_FORMAT = "appliance-gateway-links-used/1"
REVOKED_FORMAT = "appliance-gateway-sessions-revoked/1"
SESSION_TTL_S = 12 * 3600.0
MAX_TOKEN_CHARS = 2048
MAX_NAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024
MIN_KEY_BYTES = 32
MAX_REVOKED = 100_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Throttled(Exception):
    """Too many failed sign-ins for this name or address: retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"too many failed sign-ins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Throttle:
    """Failed attempts per key (a user name, a client address) in a sliding window; bounded."""

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, max_keys: int = 10_000):
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self.failures: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self.lock = threading.Lock()

    def retry_after(self, key: str, now: float) -> int:
        """0 when ``key`` may try now, else the seconds until its oldest failure leaves the window."""
        with self.lock:
            win = self.failures.get(key)
            if not win:
                return 0
            while win and now - win[0] >= self.window_s:
                win.popleft()
            if len(win) < self.max_failures:
                return 0
            return max(1, int(self.window_s - (now - win[0])) + 1)

    def fail(self, key: str, now: float) -> None:
        with self.lock:
            win = self.failures.pop(key, None) or collections.deque()
            win.append(now)
            while len(win) > self.max_failures:
                win.popleft()
            self.failures[key] = win  # most recent last
            while len(self.failures) > self.max_keys:
                self.failures.popitem(last=False)

    def clear(self, key: str) -> None:
        with self.lock:
            self.failures.pop(key, None)


class _Files:
    """The config files with their signatures, re-read on change (one lock, cheap stat()s)."""

    def __init__(self, config_dir: str):
        self.dir = config_dir
        self.users: dict[str, dict] = {}
        self.links: dict[str, dict] = {}
        self.key: bytes = b""
        self.used: dict[str, dict] = {}
        self.revoked: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self._sig: dict[str, tuple | None] = {}
        self._checked = 0.0
        self.lock = threading.RLock()

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    _signature = staticmethod(file_signature)  # the same rule as the key and route tables

    def maybe_reload(self, min_interval_s: float = 0.1) -> list[str]:
        now = time.monotonic()
        if now - self._checked < min_interval_s:
            return []
        return self.reload()

    def reload(self) -> list[str]:
        changed = []
        with self.lock:
            self._checked = time.monotonic()
            for name, attr, loader in (("users.json", "users", _load_users), ("links.json", "links", _load_links),
                                       ("session.key", "key", _load_key),
                                       ("links-used.json", "used", _load_used),
                                       ("sessions-revoked.json", "revoked", _load_revoked)):
                sig = self._signature(self.path(name))
                if sig == self._sig.get(name):
                    continue
                try:
                    value = loader(self.path(name)) if sig != ("missing",) else type(getattr(self, attr))()
                    self.errors.pop(name, None)
                except (OSError, ValueError, TypeError, AttributeError) as exc:
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    value = type(getattr(self, attr))()  # fail closed: no users, no links, no key
                setattr(self, attr, value)
                self._sig[name] = sig
                changed.append(f"{attr}: {len(value)}" if attr != "key" else f"session key: {bool(value)}")
        return changed


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def _load_users(path: str) -> dict[str, dict]:
    out = {}
    for name, rec in (_read_json(path).get("users") or {}).items():
        if isinstance(name, str) and isinstance(rec, dict) and rec.get("role") in ("admin", "user"):
            out[name] = {"role": rec["role"], "hash": rec.get("hash") if isinstance(rec.get("hash"), str) else None,
                         "epoch": int(rec.get("epoch") or 0)}
    return out


def _load_links(path: str) -> dict[str, dict]:
    out = {}
    for digest, rec in (_read_json(path).get("links") or {}).items():
        if isinstance(rec, dict) and isinstance(rec.get("user"), str):
            out[str(digest)] = {"user": rec["user"], "expires_at": float(rec.get("expires_at") or 0)}
    return out


def _load_key(path: str) -> bytes:
    with open(path, "rb") as fh:
        key = fh.read(4096)
    return key if len(key) >= MIN_KEY_BYTES else b""


def _load_used(path: str) -> dict[str, dict]:
    return {str(k): v for k, v in (_read_json(path).get("used") or {}).items() if isinstance(v, dict)}


def _load_revoked(path: str) -> dict[str, float]:
    return {str(k): float(v) for k, v in (_read_json(path).get("revoked") or {}).items()}


def _write_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Auth:
    """Sign-in decisions for the gateway. Thread-safe; blocking (argon2, file writes): the HTTP
    layer (authweb.py) calls the slow methods in a worker thread."""

    def __init__(self, config_dir: str, *, session_ttl_s: float = SESSION_TTL_S, max_failures: int = 5,
                 window_s: float = 60.0, clock=time.time):
        from argon2 import PasswordHasher

        self.files = _Files(config_dir)
        self.session_ttl_s = session_ttl_s
        self.clock = clock
        self.throttle = Throttle(max_failures, window_s)
        self._hasher = PasswordHasher()
        # what an unknown name (or a user without a password) is checked against: the same cost
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._write_lock = threading.Lock()
        self.files.reload()

    # ---- state -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether sessions can be issued (a session key exists)."""
        self.files.maybe_reload()
        return bool(self.files.key)

    def user(self, name: str) -> dict | None:
        self.files.maybe_reload()
        return self.files.users.get(name)

    # ---- sign-in ---------------------------------------------------------------------------
    def login_password(self, name: str, password: str, client: str | None = None) -> str | None:
        """A session token for a right name and password, else None; :class:`Throttled` after
        too many failures for this name or ``client`` address (checked before any hashing)."""
        from argon2.exceptions import Argon2Error, InvalidHashError

        now = self.clock()
        name = str(name or "")[:MAX_NAME_CHARS]
        password = str(password or "")[:MAX_PASSWORD_CHARS]
        keys = [f"user:{name}"] + ([f"addr:{client}"] if client else [])
        wait = max(self.throttle.retry_after(k, now) for k in keys)
        if wait:
            raise Throttled(wait)
        self.files.maybe_reload()
        rec = self.files.users.get(name)
        if rec is None:  # added a moment ago (reloads are throttled)? look at the files now
            self.files.reload()
            rec = self.files.users.get(name)
        stored = rec["hash"] if rec and rec["hash"] else None
        try:
            ok = self._hasher.verify(stored or self._dummy_hash, password) and stored is not None
        except (Argon2Error, InvalidHashError):
            ok = False
        if not ok or not self.files.key:
            for k in keys:
                self.throttle.fail(k, now)
            return None
        self.throttle.clear(f"user:{name}")
        return self.issue(name, rec, now)

    def redeem_link(self, token: str, client: str | None = None) -> tuple[str, str] | None:
        """(session token, user) for an unused, unexpired one-time link, which is used up now;
        else None (failures count against ``client`` like wrong passwords)."""
        now = self.clock()
        keys = [f"addr:{client}"] if client else []
        wait = max([self.throttle.retry_after(k, now) for k in keys] or [0])
        if wait:
            raise Throttled(wait)
        token = str(token or "")
        result = None
        if 20 <= len(token) <= MAX_TOKEN_CHARS:
            digest = token_digest(token)
            self.files.maybe_reload()
            link = self.files.links.get(digest)
            if link is None:  # made a moment ago? look at the files now
                self.files.reload()
                link = self.files.links.get(digest)
            rec = self.files.users.get(link["user"]) if link else None
            if link and rec and link["expires_at"] > now and self.files.key and self._mark_used(digest, link, now):
                result = (self.issue(link["user"], rec, now), link["user"])
        if result is None:
            for k in keys:
                self.throttle.fail(k, now)
        return result

    def _mark_used(self, digest: str, link: dict, now: float) -> bool:
        """Record the link as used (merged under a file lock); False when it already was."""
        path = self.files.path("links-used.json")
        with self._write_lock, self._flock():
            try:
                used = _load_used(path)
            except FileNotFoundError:
                used = {}
            except (OSError, ValueError, TypeError, AttributeError):
                used = dict(self.files.used)  # unreadable: keep what we knew
            if digest in used or digest in self.files.used:
                return False
            used = {k: v for k, v in used.items() if float(v.get("expires_at") or 0) > now}  # expired: moot
            used[digest] = {"used_at": now, "expires_at": link["expires_at"]}
            _write_atomic(path, {"format": LINKS_USED_FORMAT, "used": used})
            self.files.used = used
        return True

    @contextlib.contextmanager
    def _flock(self):
        if fcntl is None:
            yield
            return
        fd = os.open(self.files.path(".auth.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- sessions --------------------------------------------------------------------------
    def issue(self, name: str, rec: dict, now: float | None = None) -> str:
        """A signed session token for ``name`` (its current role and epoch)."""
        now = self.clock() if now is None else now
        payload = {"u": name, "r": rec["role"], "e": int(rec["epoch"]), "iat": int(now),
                   "exp": int(now + self.session_ttl_s), "n": secrets.token_hex(8)}
        body = "v1." + _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return body + "." + _b64(hmac.new(self.files.key, body.encode(), hashlib.sha256).digest())

    def _payload(self, token: str) -> dict | None:
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2 or not self.files.key:
            return None
        body, _, sig = token.rpartition(".")
        if not body.startswith("v1."):
            return None
        try:
            want = hmac.new(self.files.key, body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(_unb64(sig), want):
                return None
            payload = json.loads(_unb64(body[3:]))
        except (ValueError, TypeError):
            return None
        return payload if isinstance(payload, dict) else None

    def session(self, token: str) -> dict | None:
        """``{"user", "role", "expires_at"}`` of a valid session token, else None."""
        self.files.maybe_reload()
        payload = self._payload(token)
        if payload is None:
            return None
        now = self.clock()
        try:
            name, epoch, exp, iat = str(payload["u"]), int(payload["e"]), float(payload["exp"]), float(payload["iat"])
        except (KeyError, TypeError, ValueError):
            return None
        rec = self.files.users.get(name)
        if rec is None or rec["epoch"] != epoch or exp <= now or iat > now + 300:
            return None
        if token_digest(token) in self.files.revoked:
            return None
        return {"user": name, "role": rec["role"], "expires_at": exp}

    def logout(self, token: str) -> bool:
        """End a session for good (it is refused from now on, here and after a restart)."""
        info = self.session(token)
        if info is None:
            return False
        now = self.clock()
        path = self.files.path("sessions-revoked.json")
        with self._write_lock, self._flock():
            try:
                revoked = _load_revoked(path)
            except FileNotFoundError:
                revoked = {}
            except (OSError, ValueError, TypeError, AttributeError):
                revoked = dict(self.files.revoked)
            revoked = {k: v for k, v in revoked.items() if v > now}
            revoked[token_digest(token)] = info["expires_at"]
            if len(revoked) > MAX_REVOKED:  # bounded: the ones expiring soonest go first
                revoked = dict(sorted(revoked.items(), key=lambda kv: kv[1])[-MAX_REVOKED:])
            _write_atomic(path, {"format": REVOKED_FORMAT, "revoked": revoked})
            self.files.revoked = revoked
        return True
