"""Ed25519 keys for licenses: generate (vendor side), load, and find the trusted public keys.

Trusted public keys come from ``APPLIANCE_LICENSE_PUBKEYS`` (files or directories separated
by ``os.pathsep``) or, when unset, ``<data_dir>/trust/license-keys/`` (``*.pub``/``*.pem``).
A key is named by its id: the first 16 hex digits of sha256 of its 32 raw bytes. Private
keys never live in the repository; tests generate their own.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from appliance.errors import LicenseError


def trust_dir() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "trust" / "license-keys"


def key_id(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: str | os.PathLike, name: str = "license") -> dict:
    """Write ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub``; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise LicenseError("refusing to overwrite an existing key", where=str(p),
                               fix="choose another --out directory")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key()
    pub_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"private_key": str(priv_path), "public_key": str(pub_path), "key_id": key_id(pub)}


def load_private_key(path: str | os.PathLike):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise LicenseError(f"cannot read the private key: {exc}", where=str(path),
                           fix="pass the PEM file written by `appliance license keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenseError("not an ed25519 private key", where=str(path),
                           fix="generate one with `appliance license keygen`")
    return key


def load_public_key(path: str | os.PathLike):
    """A PEM public key, or 32 raw bytes in base64 on one line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = Path(path).read_bytes()
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as exc:
        raise LicenseError(f"cannot read the public key: {exc}", where=str(path),
                           fix="use the .pub file written by `appliance license keygen`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LicenseError("not an ed25519 public key", where=str(path), fix="use an ed25519 key")
    return key


def _key_files(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.iterdir() if p.suffix in (".pub", ".pem") and p.is_file())
    return [entry] if entry.is_file() else []


def trusted_keys() -> dict[str, object]:
    """key id -> public key, from APPLIANCE_LICENSE_PUBKEYS or <data_dir>/trust/license-keys/."""
    env = os.environ.get("APPLIANCE_LICENSE_PUBKEYS")
    entries = [Path(p) for p in env.split(os.pathsep) if p] if env else [trust_dir()]
    keys: dict[str, object] = {}
    for entry in entries:
        for file in _key_files(entry):
            pub = load_public_key(file)
            keys[key_id(pub)] = pub
    return keys


def trust_locations() -> str:
    env = os.environ.get("APPLIANCE_LICENSE_PUBKEYS")
    return env if env else str(trust_dir())
