"""Issue, verify, install and look up licenses for closed models.

Verification never trusts the file: the signature must verify under a *trusted* public key
(appliance.licensing.keys), the license must not be expired at ``now`` and, when it names a
node fingerprint, must be on that node. Invalid licenses produce a status with the reason
(the planner shows it); only unreadable files raise :class:`LicenseError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from appliance.atomic import write_atomic
from appliance.errors import LicenseError
from appliance.licensing.models import LICENSE_FORMAT, LicenseFile, LicenseList, LicensePayload, LicenseStatus

DOMAIN = (LICENSE_FORMAT + "\n").encode()


def licenses_dir() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "licenses"


def utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, where: str = "expires_at") -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or ISO 8601; naive times are UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise LicenseError(f"not a date: {text!r}", where=where, fix="use YYYY-MM-DD or 2027-01-01T00:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def canonical(payload: LicensePayload) -> bytes:
    data = payload.model_dump(mode="json")
    return DOMAIN + json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def issue(private_key_path: str | os.PathLike, models: list[str], expires_at: str, customer: str,
          node_fingerprint: str | None = None, license_id: str | None = None, issued_at: datetime | None = None,
          features: list[str] | None = None) -> LicenseFile:
    """Sign a license (vendor side)."""
    from appliance.licensing.keys import key_id, load_private_key

    key = load_private_key(private_key_path)
    models = sorted(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not models:
        raise LicenseError("a license must name at least one model", where="--models", fix="--models pro-chat-32b,...")
    issued = utc_text(issued_at or datetime.now(timezone.utc))
    expires = utc_text(parse_time(expires_at, "--expires"))
    if expires <= issued:
        raise LicenseError(f"expiry {expires} is not after the issue time {issued}", where="--expires",
                           fix="choose a later date")
    if license_id is None:
        seed = json.dumps([customer, models, issued, expires, node_fingerprint], sort_keys=True).encode()
        license_id = "lic-" + hashlib.sha256(seed).hexdigest()[:12]
    payload = LicensePayload(license_id=license_id, customer=customer, models=models, issued_at=issued,
                             expires_at=expires, node_fingerprint=node_fingerprint, features=sorted(features or []))
    signature = key.sign(canonical(payload))
    return LicenseFile(payload=payload, key_id=key_id(key.public_key()),
                       signature=base64.b64encode(signature).decode())


def read(path: str | os.PathLike) -> LicenseFile:
    from pydantic import ValidationError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LicenseError("license file not found", where=str(path), fix="check the path") from None
    except (OSError, ValueError) as exc:
        raise LicenseError(f"not a license file (bad JSON: {exc})", where=str(path),
                           fix="use the file written by `appliance license issue`") from None
    try:
        return LicenseFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise LicenseError(f"not a license file: {loc}: {err['msg']}", where=str(path),
                           fix="use the file written by `appliance license issue`") from None


def verify(lic: LicenseFile, *, now: datetime | None = None, fingerprint: str | None = None,
           trusted: dict | None = None, path: str | None = None) -> LicenseStatus:
    from cryptography.exceptions import InvalidSignature

    from appliance.licensing.keys import trust_locations, trusted_keys

    p = lic.payload
    now = now or datetime.now(timezone.utc)
    expires = parse_time(p.expires_at)
    status = LicenseStatus(path=path, license_id=p.license_id, customer=p.customer, models=list(p.models),
                           expires_at=p.expires_at, node_fingerprint=p.node_fingerprint, key_id=lic.key_id,
                           valid=False,
                           days_left=(expires - (now if now.tzinfo else now.replace(tzinfo=timezone.utc))).days)
    keys = trusted if trusted is not None else trusted_keys()
    pub = keys.get(lic.key_id)
    if pub is None:
        status.reason = (f"signed by key {lic.key_id}, which is not trusted here "
                         f"(trusted keys: {trust_locations()})")
        return status
    try:
        pub.verify(base64.b64decode(lic.signature), canonical(p))
    except (InvalidSignature, ValueError):
        status.reason = "signature does not verify: the file was altered or signed by another key"
        return status
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    if now >= expires:
        status.reason = f"expired on {p.expires_at}"
        return status
    if p.node_fingerprint and fingerprint and p.node_fingerprint != fingerprint:
        status.reason = f"issued for node {p.node_fingerprint}; this node is {fingerprint}"
        return status
    if p.node_fingerprint and not fingerprint:
        status.reason = f"issued for node {p.node_fingerprint}; this node's fingerprint is unknown"
        return status
    status.valid = True
    return status


def verify_file(path: str | os.PathLike, *, now: datetime | None = None,
                fingerprint: str | None = None) -> LicenseStatus:
    return verify(read(path), now=now, fingerprint=fingerprint, path=str(path))


def install(path: str | os.PathLike, *, now: datetime | None = None, fingerprint: str | None = None) -> LicenseStatus:
    """Verify, then copy into <data_dir>/licenses/<license_id>.json (atomic rename)."""
    status = verify_file(path, now=now, fingerprint=fingerprint)
    if not status.valid:
        raise LicenseError(f"not installed: {status.reason}", where=str(path),
                           fix="ask the vendor for a valid license for this node")
    target_dir = licenses_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{status.license_id}.json"
    write_atomic(target, Path(path).read_bytes(), mode=0o644)
    status.path = str(target)
    return status


def installed(*, now: datetime | None = None, fingerprint: str | None = None) -> LicenseList:
    directory = licenses_dir()
    out = LicenseList(directory=str(directory))
    if not directory.is_dir():
        return out
    files = sorted(p for p in directory.glob("*.json") if p.is_file())
    if not files:
        return out
    for file in files:
        try:
            out.licenses.append(verify_file(file, now=now, fingerprint=fingerprint))
        except LicenseError as exc:
            out.licenses.append(LicenseStatus(path=str(file), valid=False, reason=exc.message))
    return out


def entitlements(models: list[str], *, inventory=None, licenses=None, now: datetime | None = None,
                 fingerprint: str | None = None) -> dict[str, str | None]:
    """model id -> None when a valid license covers it, else the reason (for the planner).

    ``licenses``: LicenseFile objects or paths to check; default: the installed ones.
    """
    from appliance.licensing.fingerprint import node_fingerprint

    if fingerprint is None and inventory is not None:
        fingerprint = node_fingerprint(inventory)
    if licenses is None:
        directory = licenses_dir()
        has_files = directory.is_dir() and any(directory.glob("*.json"))
        statuses = installed(now=now, fingerprint=fingerprint).licenses if has_files else []
    else:
        statuses = []
        for item in licenses:
            if isinstance(item, LicenseFile):
                statuses.append(verify(item, now=now, fingerprint=fingerprint))
            else:
                statuses.append(verify_file(item, now=now, fingerprint=fingerprint))
    result: dict[str, str | None] = {}
    for model in models:
        covering = [s for s in statuses if model in s.models]
        if any(s.valid for s in covering):
            result[model] = None
        elif covering:
            result[model] = "; ".join(f"license {s.license_id}: {s.reason}" for s in covering)
        else:
            result[model] = "no installed license covers it (install one with `appliance license install FILE`)"
    return result
