"""Gateway API keys: create (shown once), list, revoke, and export for the gateway.

Why this hashing scheme
-----------------------
A key is ``apk_<id>_<secret>``: a public 12-hex-digit id plus a 256-bit random secret
(``secrets.token_urlsafe(32)``). The state keeps, per key, a random 16-byte salt and
``HMAC-SHA256(salt, whole key)``; never the key itself.

* The secret has 256 bits of entropy, so an offline guess against a stolen hash is
  hopeless even with a fast hash. Slow password KDFs (scrypt, argon2) exist to protect
  *low-entropy* passwords; here they would only add ~50 ms to every request (or force the
  gateway to keep a plaintext-key cache in memory).
* The per-key salt means two installs (or two keys) never share a hash and no
  precomputed table applies; HMAC with the salt as key is the standard keyed construction.
* The public id lets the gateway find the one record to check in O(1) and compare with
  :func:`hmac.compare_digest` (constant time); verification costs ~2 µs, so the gateway
  needs no cache of verified keys.

Revocation and expiry are enforced by the gateway from the exported verification file
(``<data_dir>/gateway/keys.json``), which it re-reads within a second of any change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.atomic import write_atomic
from appliance.errors import StateError, UsageError
from appliance.state.store import StateStore

KEYS_FILE_FORMAT = "appliance-gateway-keys/1"
KEY_PREFIX = "apk"
APP_OWNER_PREFIX = "app:"  # owner of an app's own key: app:<name> (appliance.gateway.wiring)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9._:/*?@+-]{0,199}$")
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdwy])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}

_DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    models TEXT NOT NULL,
    expires_at REAL,
    rpm INTEGER,
    tokens_per_day INTEGER,
    owner TEXT NOT NULL DEFAULT 'admin',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL
"""


class KeyUsage(BaseModel):
    """What the gateway counted for one key (from ``usage.json``; zero if never used)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_today: int = 0
    denied: int = 0
    last_used_at: float | None = None


class ModelUsage(BaseModel):
    """What the gateway counted for one served model (``usage.json`` ``"models"``)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests_today: int = 0
    tokens_today: int = 0
    last_used_at: float | None = None


class KeyInfo(BaseModel):
    """One key as ``keys list`` shows it. Carries no secret (only the public id)."""

    name: str
    key_id: str
    models: list[str] = Field(default_factory=list, description="allowed model names/patterns; empty = all")
    expires_at: float | None = None
    rpm: int | None = Field(default=None, description="requests per minute; None = unlimited")
    tokens_per_day: int | None = Field(default=None, description="tokens per UTC day; None = unlimited")
    owner: str = "admin"
    created_at: float
    revoked_at: float | None = None
    status: str = Field(description="active | expired | revoked")
    usage: KeyUsage = Field(default_factory=KeyUsage)


class CreatedKey(BaseModel):
    """The result of ``keys create``: the only time the plaintext key exists outside its holder."""

    key: str
    name: str
    key_id: str
    models: list[str] = Field(default_factory=list)
    expires_at: float | None = None
    rpm: int | None = None
    tokens_per_day: int | None = None


class KeyList(BaseModel):
    keys: list[KeyInfo] = Field(default_factory=list)


# ---- helpers ---------------------------------------------------------------------------
def hash_key(key: str, salt_hex: str) -> str:
    """HMAC-SHA256(salt, key) as hex: what the state and the gateway's file hold."""
    return hmac.new(bytes.fromhex(salt_hex), key.encode(), hashlib.sha256).hexdigest()


def parse_key(key: str) -> str | None:
    """The public id of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not re.fullmatch(r"[0-9a-f]{12}", parts[1]) or not parts[2]:
        return None
    return parts[1]


def parse_expiry(text: str | None, *, now: float | None = None) -> float | None:
    """``30d``/``12h``/``15m``/``90s``/``2w``/``1y`` from now, or an ISO date/datetime (UTC if naive)."""
    if text is None or text == "" or text.lower() == "never":
        return None
    now = time.time() if now is None else now
    m = _DURATION_RE.match(text.strip().lower())
    if m:
        seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
        if seconds <= 0:
            raise UsageError(f"expiry {text!r} is not in the future", where="--expires",
                             fix="use a positive duration such as 30d or 12h")
        return now + seconds
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read expiry {text!r}", where="--expires",
                         fix="use a duration (90s, 15m, 12h, 30d, 2w, 1y) or an ISO date like 2026-12-31") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    ts = dt.timestamp()
    if ts <= now:
        raise UsageError(f"expiry {text!r} is in the past", where="--expires",
                         fix="give a future date, or a duration such as 30d")
    return ts


def _check_models(models: list[str]) -> list[str]:
    out: list[str] = []
    for item in models:
        for m in (p.strip() for p in item.split(",")):
            if not m:
                continue
            if not _MODEL_RE.match(m):
                raise UsageError(f"invalid model name {m!r}", where="--models",
                                 fix="give served model names (as in /v1/models), comma-separated; * and ? match")
            if m not in out:
                out.append(m)
    return out


def _check_limit(value: int | None, option: str) -> int | None:
    if value is None:
        return None
    if value <= 0:
        raise UsageError(f"{option} must be a positive number, got {value}", where=option,
                         fix=f"omit {option} for no limit")
    return int(value)


def _open(store: StateStore | None) -> StateStore:
    store = store or StateStore.open_default()
    store.ensure_schema("gateway_keys", 1, _DDL)
    return store


def gateway_dir() -> Path:
    """``<data_dir>/gateway``: the directory the runtime mounts at /etc/appliance/gateway."""
    from appliance.paths import data_dir

    return data_dir() / "gateway"


# ---- operations ------------------------------------------------------------------------
FAULT_ENV = "APPLIANCE_KEYS_FAULT"  # tests: "pause-after-commit" holds create_key there for 5 s


def _fault(point: str) -> None:
    """A test hook: pause at ``point`` (announced on stderr) so a test can signal the process there."""
    import os
    import sys

    if os.environ.get(FAULT_ENV) == f"pause-{point}":
        print(f"fault: paused {point}", file=sys.stderr, flush=True)
        time.sleep(5)


def create_key(name: str, *, models: list[str] | None = None, expires: str | None = None,
               rpm: int | None = None, tokens_per_day: int | None = None, owner: str = "admin",
               store: StateStore | None = None, export_dir: Path | None = None) -> CreatedKey:
    """Create a key, store only its salted hash, re-export the gateway file, return the key once."""
    if not _NAME_RE.match(name or ""):
        raise UsageError(f"invalid key name {name!r}", where="--name",
                         fix="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    scope = _check_models(models or [])
    expires_at = parse_expiry(expires)
    rpm = _check_limit(rpm, "--rpm")
    tokens_per_day = _check_limit(tokens_per_day, "--tokens")
    store = _open(store)
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    with store.transaction() as conn:
        exists = conn.execute("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,)).fetchone()
        if exists:
            raise UsageError(f"an active key named {name!r} already exists", where="--name",
                             fix=f"choose another name, or run `appliance keys revoke {name}` first")
        conn.execute(
            "INSERT INTO api_keys(key_id, name, salt, key_hash, models, expires_at, rpm, tokens_per_day,"
            " owner, created_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (key_id, name, salt, hash_key(key, salt), json.dumps(scope), expires_at, rpm, tokens_per_day,
             owner, time.time()))
        store.add_event("keys", f"created API key {name!r}", service="gateway",
                        data={"name": name, "key_id": key_id, "models": scope, "owner": owner})
        export_keys_file(store=store, directory=export_dir)  # inside: a failed export stores nothing
    _fault("after-commit")
    return CreatedKey(key=key, name=name, key_id=key_id, models=scope, expires_at=expires_at,
                      rpm=rpm, tokens_per_day=tokens_per_day)


def revoke_key(name: str, *, store: StateStore | None = None, export_dir: Path | None = None) -> KeyInfo:
    """Revoke the active key called ``name``; the gateway rejects it within about a second."""
    store = _open(store)
    with store.transaction() as conn:
        row = conn.execute("SELECT key_id FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,)).fetchone()
        if row is None:
            raise UsageError(f"no active key named {name!r}", where="keys revoke",
                             fix="see `appliance keys list` for the names")
        conn.execute("UPDATE api_keys SET revoked_at=? WHERE key_id=?", (time.time(), row["key_id"]))
        store.add_event("keys", f"revoked API key {name!r}", service="gateway",
                        data={"name": name, "key_id": row["key_id"]})
        export_keys_file(store=store, directory=export_dir)
    return next(k for k in list_keys(store=store, include_revoked=True).keys if k.key_id == row["key_id"])


def list_keys(*, store: StateStore | None = None, include_revoked: bool = False,
              usage_dir: Path | None = None) -> KeyList:
    """Every key (active and expired; revoked ones too if asked) with its usage counters."""
    store = _open(store)
    usage = read_usage(usage_dir)
    now = time.time()
    sql = "SELECT * FROM api_keys"
    if not include_revoked:
        sql += " WHERE revoked_at IS NULL"
    out = []
    for r in store.query(sql + " ORDER BY created_at, name"):
        status = "revoked" if r["revoked_at"] else ("expired" if r["expires_at"] and r["expires_at"] <= now
                                                    else "active")
        out.append(KeyInfo(name=r["name"], key_id=r["key_id"], models=json.loads(r["models"]),
                           expires_at=r["expires_at"], rpm=r["rpm"], tokens_per_day=r["tokens_per_day"],
                           owner=r["owner"], created_at=r["created_at"], revoked_at=r["revoked_at"],
                           status=status, usage=usage.get(r["key_id"], KeyUsage())))
    return KeyList(keys=out)


def verify_key(key: str, *, store: StateStore | None = None) -> KeyInfo | None:
    """The active, unexpired key matching ``key`` (for the runtime's checks), else None."""
    key_id = parse_key(key)
    if key_id is None:
        return None
    store = _open(store)
    rows = store.query("SELECT salt, key_hash FROM api_keys WHERE key_id=? AND revoked_at IS NULL", (key_id,))
    if not rows or not hmac.compare_digest(hash_key(key, rows[0]["salt"]), rows[0]["key_hash"]):
        return None
    info = next((k for k in list_keys(store=store).keys if k.key_id == key_id), None)
    return info if info and info.status == "active" else None


def export_keys_file(*, store: StateStore | None = None, directory: Path | None = None) -> Path:
    """Write ``keys.json`` (ids, salts, hashes, scopes, limits of unrevoked keys) atomically.

    An app's own key (owner ``app:<name>``) carries ``"acts_for_users": true``: the app calls
    for the user signed in on its page and says who in ``X-Appliance-User``; the gateway
    records usage per user from that header for these keys only (docs/users.md).

    The file holds no secret: hashes of 256-bit keys are safe to read, so it is 0644 and
    the gateway container may run as any user. Written to a temp file and renamed, so the
    gateway never reads half a file.
    """
    store = _open(store)
    keys = {}
    for r in store.query("SELECT * FROM api_keys WHERE revoked_at IS NULL ORDER BY key_id"):
        keys[r["key_id"]] = {"name": r["name"], "salt": r["salt"], "hash": r["key_hash"],
                             "models": json.loads(r["models"]), "expires_at": r["expires_at"],
                             "rpm": r["rpm"], "tokens_per_day": r["tokens_per_day"]}
        if str(r["owner"]).startswith(APP_OWNER_PREFIX):
            # an app's key calls on behalf of its signed-in users: the gateway takes its
            # X-Appliance-User header for usage per user (and from no other key)
            keys[r["key_id"]]["acts_for_users"] = True
    doc = {"format": KEYS_FILE_FORMAT, "generated_at": time.time(), "keys": keys}
    return write_gateway_file("keys.json", json.dumps(doc, indent=1, sort_keys=True) + "\n", mode=0o644,
                              directory=directory, what="key file")


def write_gateway_file(name: str, data: str | bytes, *, mode: int, directory: Path | None = None,
                       what: str = "file") -> Path:
    """Write ``<gateway config dir>/<name>`` atomically with ``mode`` (the one way the CLI hands the
    gateway a file: it never reads half of one); an OSError becomes a StateError naming the file.

    The file belongs to whoever owns the directory: once the runtime handed the directory to the
    gateway's account, a 0600 file written later by root (``appliance users add``) stays readable
    to the gateway."""
    directory = Path(directory) if directory else gateway_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        st = directory.stat()
    except OSError as exc:
        raise StateError(f"cannot create the gateway's config directory: {exc.strerror or exc}",
                         where=str(directory),
                         fix="run as the appliance admin (root) or set APPLIANCE_DATA_DIR") from None
    handed = hasattr(os, "geteuid") and os.geteuid() == 0 and st.st_uid != 0
    path = directory / name
    try:
        write_atomic(path, data, mode=mode, owner_uid=st.st_uid if handed else None,
                     owner_gid=st.st_gid if handed else None)
    except OSError as exc:
        raise StateError(f"cannot write the gateway's {what}: {exc.strerror or exc}", where=str(path),
                         fix="run as the appliance admin (root) or set APPLIANCE_DATA_DIR") from None
    return path


def usage_section(section: str, directory: Path | None = None) -> dict[str, dict]:
    """One section (``"keys"``, ``"users"``, ``"models"``) of the ``usage.json`` the gateway flushes:
    name -> its counters dict. A missing or corrupt file, or a section that is not a table, is
    empty: usage is shown where it can be, never an error."""
    path = (Path(directory) if directory else gateway_dir()) / "usage.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    table = doc.get(section) if isinstance(doc, dict) else None
    return {str(k): v for k, v in table.items() if isinstance(v, dict)} if isinstance(table, dict) else {}


def read_usage(directory: Path | None = None) -> dict[str, KeyUsage]:
    """Usage counters the gateway flushes to ``usage.json`` (missing/corrupt file = no usage)."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    out = {}
    for key_id, u in usage_section("keys", directory).items():
        try:
            out[key_id] = KeyUsage(requests=int(u.get("requests", 0)), prompt_tokens=int(u.get("prompt_tokens", 0)),
                                   completion_tokens=int(u.get("completion_tokens", 0)),
                                   tokens_today=int(u.get("day_tokens", 0)) if u.get("day") == today else 0,
                                   denied=int(u.get("denied", 0)), last_used_at=u.get("last_used_at"))
        except (TypeError, ValueError):
            continue
    return out


def read_model_usage(directory: Path | None = None) -> dict[str, ModelUsage]:
    """Per served model, the gateway's counters from ``usage.json`` (missing/corrupt = none)."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    out = {}
    for name, u in usage_section("models", directory).items():
        try:
            same_day = u.get("day") == today
            out[name] = ModelUsage(requests=int(u.get("requests", 0)), prompt_tokens=int(u.get("prompt_tokens", 0)),
                                   completion_tokens=int(u.get("completion_tokens", 0)),
                                   requests_today=int(u.get("day_requests", 0)) if same_day else 0,
                                   tokens_today=int(u.get("day_tokens", 0)) if same_day else 0,
                                   last_used_at=u.get("last_used_at"))
        except (TypeError, ValueError):
            continue
    return out
