"""Users of the box's apps: add, list, remove, change a password, one-time sign-in links.

Why users at all: the sample apps call the gateway with their own scoped key; without a login
anyone who reaches an app's port spends that key (and a cross-site page could post to it). So
every app asks the gateway who is signed in (one login for the whole box, docs/users.md).

How it is stored
----------------
* ``users`` (state): name, role (``admin`` | ``user``), the password's argon2id hash as a PHC
  string (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``: argon2-cffi's ``PasswordHasher``
  with its default, RFC 9106 low-memory parameters, which the string carries, so the gateway
  verifies with whatever parameters a hash was made with), ``session_epoch`` and
  ``removed_at``. ``passwd`` and ``remove`` bump the epoch: every session the gateway issued
  carries the epoch it was issued under and is refused once it moved. A password may be
  absent (the first admin ``init`` creates): such a user signs in with a link only.
* ``login_links`` (state): one-time sign-in links. The token (``secrets.token_urlsafe(32)``:
  256 bits) is printed once; only its SHA-256 is stored (a fast hash suffices for a random
  256-bit secret, as for API keys). A link expires 600 s after it was made or at its first use.

What the gateway reads (written atomically into its config dir by every change here and by
``init``): ``users.json`` (name -> role, hash, epoch; mode 0600: password hashes are secret),
``links.json`` (SHA-256 -> user, expires_at; unused and unexpired links only; 0600) and
``session.key`` (32 random bytes that sign the session cookies; created once, 0600). The
gateway marks a redeemed link in its own ``links-used.json``; the next export takes that over
into the state (``used_at``), so ``login_links`` says which links were used.

argon2 is imported only where a password is hashed (never at import of this module): ``appliance
--help`` and ``users list`` stay fast.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from appliance.errors import StateError, UsageError
from appliance.gateway.keys import gateway_dir, usage_section, write_gateway_file
from appliance.state.store import StateStore

USERS_FILE_FORMAT = "appliance-gateway-users/1"
LINKS_FILE_FORMAT = "appliance-gateway-links/1"
USERS_FILE, LINKS_FILE, SESSION_KEY_FILE = "users.json", "links.json", "session.key"
LINKS_USED_FILE = "links-used.json"  # written by the gateway: the links it redeemed
SESSION_KEY_BYTES = 32
LINK_TTL_S = 600.0
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; the gateway's sign-in body is bounded anyway
FIRST_ADMIN = "admin"
ROLES = ("admin", "user")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEEP_LINKS_S = 30 * 86400  # expired or used links are forgotten after this

DOMAIN, VERSION = "gateway_users", 1
_DDL = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT,
    session_epoch INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    removed_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_active_name ON users(name) WHERE removed_at IS NULL;
CREATE TABLE IF NOT EXISTS login_links (
    token_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE INDEX IF NOT EXISTS login_links_expiry ON login_links(expires_at)
"""

Role = Literal["admin", "user"]


class UserUsage(BaseModel):
    """What the gateway counted for a user (``usage.json`` ``"users"``; zero if never seen)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_used_at: float | None = None


class UserInfo(BaseModel):
    """A user as ``users list`` shows them: never the hash."""

    name: str
    role: Role
    has_password: bool = Field(description="False: signs in with a one-time link only (`users passwd` sets one)")
    created_at: float
    updated_at: float
    usage: UserUsage = Field(default_factory=UserUsage)


class UserList(BaseModel):
    users: list[UserInfo] = Field(default_factory=list)


class LoginLink(BaseModel):
    """A one-time sign-in URL: valid until ``expires_at`` or its first use. Printed once."""

    user: str
    url: str
    expires_at: float


class FirstAdmin(BaseModel):
    """What ``init`` did about the first admin: created one (with a link), or found one."""

    user: str | None = Field(description="the admin's name (None: none exists and none could be made)")
    created: bool = False
    login_url: str | None = Field(default=None, description="a one-time sign-in link; only when just created")
    message: str = ""


# ---- helpers -----------------------------------------------------------------------------------
def _open(store: StateStore | None) -> StateStore:
    store = store or StateStore.open_default()
    store.ensure_schema(DOMAIN, VERSION, _DDL)
    return store


def check_name(name: str, where: str = "NAME") -> str:
    if not _NAME_RE.match(name or ""):
        raise UsageError(f"invalid user name {name!r}", where=where,
                         fix="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"invalid role {role!r}", where="--role", fix="use admin or user")
    return role


def check_password(password: str | None) -> str:
    """A password worth hashing: 12 to 1024 characters, not only white space."""
    if password is None or not password.strip():
        raise UsageError("the password is empty", where="password",
                         fix=f"give one of at least {MIN_PASSWORD_CHARS} characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"the password has {len(password)} characters, fewer than {MIN_PASSWORD_CHARS}",
                         where="password", fix=f"use at least {MIN_PASSWORD_CHARS} characters (a passphrase)")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UsageError(f"the password is longer than {MAX_PASSWORD_CHARS} characters", where="password",
                         fix="use a shorter one")
    return password


def hash_password(password: str) -> str:
    """argon2id PHC string (argon2-cffi's default parameters)."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _row(conn, name: str):
    return conn.execute("SELECT * FROM users WHERE name=? AND removed_at IS NULL", (name,)).fetchone()


def _need(conn, name: str, where: str):
    row = _row(conn, name)
    if row is None:
        raise UsageError(f"no user named {name!r}", where=where, fix="see `appliance users list` for the names")
    return row


def _info(r, usage: dict[str, UserUsage]) -> UserInfo:
    return UserInfo(name=r["name"], role=r["role"], has_password=bool(r["password_hash"]),
                    created_at=r["created_at"], updated_at=r["updated_at"],
                    usage=usage.get(r["name"], UserUsage()))


# ---- operations --------------------------------------------------------------------------------
def add_user(name: str, *, role: str = "user", password: str | None, store: StateStore | None = None,
             export_dir: Path | None = None) -> UserInfo:
    """Add a user (``password`` None: link sign-in only) and re-export the gateway's files.

    The password is checked and hashed before the transaction, so a refusal changes nothing.
    A name once removed can be used again; the new user's sessions epoch starts above the old
    one's, so no session of the removed user becomes valid again.
    """
    check_name(name)
    check_role(role)
    pw_hash = hash_password(check_password(password)) if password is not None else None
    store = _open(store)
    now = time.time()
    with store.transaction() as conn:
        if _row(conn, name) is not None:
            raise UsageError(f"a user named {name!r} already exists", where="NAME",
                             fix=f"choose another name, or change the password: appliance users passwd {name}")
        epoch = conn.execute("SELECT COALESCE(MAX(session_epoch), 0) + 1 FROM users WHERE name=?",
                             (name,)).fetchone()[0]
        conn.execute("INSERT INTO users(name, role, password_hash, session_epoch, created_at, updated_at)"
                     " VALUES(?,?,?,?,?,?)", (name, role, pw_hash, epoch, now, now))
        store.add_event("users", f"added user {name!r} ({role})", service="gateway", data={"name": name, "role": role})
        export_users_files(store=store, directory=export_dir)  # inside: a failed export stores nothing
        row = _row(conn, name)
    return _info(row, {})


def set_password(name: str, password: str, *, store: StateStore | None = None,
                 export_dir: Path | None = None) -> UserInfo:
    """Replace the password and sign the user out everywhere (the session epoch moves)."""
    check_name(name)
    pw_hash = hash_password(check_password(password))
    store = _open(store)
    with store.transaction() as conn:
        row = _need(conn, name, "users passwd")
        conn.execute("UPDATE users SET password_hash=?, session_epoch=session_epoch+1, updated_at=? WHERE id=?",
                     (pw_hash, time.time(), row["id"]))
        store.add_event("users", f"changed the password of {name!r}; their sessions ended", service="gateway",
                        data={"name": name})
        export_users_files(store=store, directory=export_dir)
        row = _row(conn, name)
    return _info(row, {})


def remove_user(name: str, *, store: StateStore | None = None, export_dir: Path | None = None) -> UserInfo:
    """Remove a user: their sessions and unused links stop working within a second. The last
    admin cannot be removed (nobody could hand out sign-in links from the apps' side then --
    the CLI still could, but a box without an admin is a mistake worth refusing)."""
    check_name(name)
    store = _open(store)
    with store.transaction() as conn:
        row = _need(conn, name, "users remove")
        if row["role"] == "admin":
            admins = conn.execute("SELECT COUNT(*) FROM users WHERE role='admin' AND removed_at IS NULL").fetchone()[0]
            if admins <= 1:
                raise UsageError(f"{name!r} is the only admin", where="users remove",
                                 fix="add another first: appliance users add NAME --role admin")
        now = time.time()
        conn.execute("UPDATE users SET removed_at=?, updated_at=?, session_epoch=session_epoch+1 WHERE id=?",
                     (now, now, row["id"]))
        store.add_event("users", f"removed user {name!r}", service="gateway", data={"name": name})
        export_users_files(store=store, directory=export_dir)
    return _info(row, {})


def list_users(*, store: StateStore | None = None, usage_dir: Path | None = None) -> UserList:
    """Every current user with the gateway's usage counters for them; no hash."""
    store = _open(store)
    usage = read_user_usage(usage_dir)
    rows = store.query("SELECT * FROM users WHERE removed_at IS NULL ORDER BY created_at, name")
    return UserList(users=[_info(r, usage) for r in rows])


def create_login_link(name: str, *, base_url: str | None = None, store: StateStore | None = None,
                      export_dir: Path | None = None, ttl_s: float = LINK_TTL_S) -> LoginLink:
    """A fresh one-time sign-in link for ``name``: ``<gateway>/auth/login?token=<token>``.

    ``base_url``: the gateway's public URL (default: the installed release's gateway endpoint,
    what ``init`` and ``status`` print). Only the token's SHA-256 is stored and exported.
    """
    check_name(name)
    store = _open(store)
    _need(store.conn, name, "users login-link")  # an unknown name is the error to show, not the URL
    base = (base_url or gateway_public_url(store)).rstrip("/").removesuffix("/v1")
    token = secrets.token_urlsafe(32)
    now = time.time()
    with store.transaction() as conn:
        row = _need(conn, name, "users login-link")
        conn.execute("DELETE FROM login_links WHERE expires_at < ?", (now - _KEEP_LINKS_S,))
        conn.execute("INSERT INTO login_links(token_sha256, user_id, created_at, expires_at) VALUES(?,?,?,?)",
                     (token_sha256(token), row["id"], now, now + ttl_s))
        store.add_event("users", f"made a sign-in link for {name!r}", service="gateway", data={"name": name})
        export_users_files(store=store, directory=export_dir)
    return LoginLink(user=name, url=f"{base}/auth/login?token={token}", expires_at=now + ttl_s)


def ensure_first_admin(*, base_url: str | None = None, store: StateStore | None = None,
                       export_dir: Path | None = None) -> FirstAdmin:
    """``init``: when no admin exists, add ``admin`` without a password and return a one-time link
    (no password ever appears in output or logs); when one exists, change nothing."""
    store = _open(store)
    with store.transaction() as conn:
        admin = conn.execute("SELECT name FROM users WHERE role='admin' AND removed_at IS NULL "
                             "ORDER BY created_at LIMIT 1").fetchone()
        if admin is not None:
            export_users_files(store=store, directory=export_dir)
            return FirstAdmin(user=admin["name"], message=f"sign in: appliance users login-link {admin['name']}")
        if _row(conn, FIRST_ADMIN) is not None:
            return FirstAdmin(user=None, message="no admin: appliance users add NAME --role admin")
        add_user(FIRST_ADMIN, role="admin", password=None, store=store, export_dir=export_dir)
        link = create_login_link(FIRST_ADMIN, base_url=base_url, store=store, export_dir=export_dir)
    return FirstAdmin(user=FIRST_ADMIN, created=True, login_url=link.url,
                      message=f"sign in as {FIRST_ADMIN} within 10 minutes (one use), then set a password: "
                              f"appliance users passwd {FIRST_ADMIN}")


# ---- what the gateway reads ----------------------------------------------------------------------
def export_users_files(*, store: StateStore | None = None, directory: Path | None = None) -> Path:
    """(Re)write ``users.json`` and ``links.json`` (0600, atomically) and create ``session.key``
    once; take the links the gateway redeemed (its ``links-used.json``) into the state first.
    Returns the directory. Called by every change here, and by the deploy pipeline before the
    stack converges (so a fresh gateway finds its files)."""
    store = _open(store)
    directory = Path(directory) if directory else gateway_dir()
    now = time.time()
    with store.transaction() as conn:
        for digest, used_at in _redeemed(directory).items():
            conn.execute("UPDATE login_links SET used_at=? WHERE token_sha256=? AND used_at IS NULL",
                         (used_at, digest))
        users = {r["name"]: {"role": r["role"], "hash": r["password_hash"], "epoch": r["session_epoch"]}
                 for r in conn.execute("SELECT * FROM users WHERE removed_at IS NULL ORDER BY name")}
        links = {r["token_sha256"]: {"user": r["name"], "expires_at": r["expires_at"]}
                 for r in conn.execute("SELECT l.token_sha256, l.expires_at, u.name FROM login_links l "
                                       "JOIN users u ON u.id = l.user_id WHERE l.used_at IS NULL AND "
                                       "l.expires_at > ? AND u.removed_at IS NULL ORDER BY l.token_sha256",
                                       (now,))}
    ensure_session_key(directory)
    write_gateway_file(USERS_FILE, json.dumps({"format": USERS_FILE_FORMAT, "generated_at": now, "users": users},
                                              indent=1, sort_keys=True) + "\n",
                       mode=0o600, directory=directory, what="users file")
    write_gateway_file(LINKS_FILE, json.dumps({"format": LINKS_FILE_FORMAT, "generated_at": now, "links": links},
                                              indent=1, sort_keys=True) + "\n",
                       mode=0o600, directory=directory, what="sign-in links file")
    return directory


def ensure_session_key(directory: Path | None = None) -> Path:
    """The box-wide secret that signs session cookies: 32 random bytes, made once (0600).
    Deleting it and exporting again signs everyone out (docs/users.md: rotating secrets)."""
    directory = Path(directory) if directory else gateway_dir()
    path = directory / SESSION_KEY_FILE
    try:
        if path.stat().st_size >= SESSION_KEY_BYTES:
            return path
    except OSError:
        pass
    return write_gateway_file(SESSION_KEY_FILE, secrets.token_bytes(SESSION_KEY_BYTES), mode=0o600,
                              directory=directory, what="session key")


def _redeemed(directory: Path) -> dict[str, float]:
    """SHA-256 -> used_at of the links the gateway redeemed (missing/corrupt file: none)."""
    try:
        doc = json.loads((directory / LINKS_USED_FILE).read_text())
        used = doc.get("used") or {}
        return {str(k): float(v.get("used_at") or time.time()) for k, v in used.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def read_user_usage(directory: Path | None = None) -> dict[str, UserUsage]:
    """The gateway's per-user counters (``usage.json`` ``"users"``; missing/corrupt = none)."""
    out = {}
    for name, u in usage_section("users", directory).items():
        try:
            out[name] = UserUsage(requests=int(u.get("requests", 0)), prompt_tokens=int(u.get("prompt_tokens", 0)),
                                  completion_tokens=int(u.get("completion_tokens", 0)),
                                  last_used_at=u.get("last_used_at"))
        except (TypeError, ValueError):
            continue
    return out


def gateway_public_url(store: StateStore | None = None) -> str:
    """The gateway's URL as ``init`` and ``status`` print it (without ``/v1``), from the active
    release of this instance; a StateError when nothing is installed yet."""
    from appliance.runtime import labels as L
    from appliance.runtime import views

    release = views.current(store or StateStore.open_default(), L.instance())
    gateway = release.stack.endpoints()["gateway"] if release and release.stack else None
    if not gateway:
        raise StateError("no gateway is installed on this box yet, so there is no sign-in URL",
                         where="users login-link", fix="run `appliance init --yes` first")
    return gateway.removesuffix("/v1")
