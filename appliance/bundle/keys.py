"""Ed25519 keys for bundles: generate, sign a manifest, verify against the node's trusted keys.

Why ed25519: small keys, fast, deterministic signatures, no parameters to get wrong. The
signature file carries a ``key_id`` (a hint naming the signer) so that a bundle from an
unknown signer is refused with a message saying *which* key signed it.

Trusted keys on a node live in ``<data_dir>/trust/bundle-keys/*.pub`` (PEM public keys);
``APPLIANCE_BUNDLE_PUBKEYS`` (files or directories separated by ``os.pathsep``) replaces
that list. Private keys never live on the node.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from appliance.atomic import write_atomic
from appliance.errors import BundleError

ENV_PUBKEYS = "APPLIANCE_BUNDLE_PUBKEYS"


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    path: str
    key: object  # cryptography Ed25519PublicKey


class KeygenResult(BaseModel):
    private_key: str
    public_key: str
    key_id: str


def trust_dir() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "trust" / "bundle-keys"


def key_id_of(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(out_dir: Path, name: str = "bundle-signing") -> KeygenResult:
    """Write ``<name>.key`` (PKCS8 PEM, mode 0600) and ``<name>.pub``; never overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise BundleError("already exists; refusing to overwrite a key", where=str(p),
                              fix="choose another --name or --out-dir")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key()
    pub_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return KeygenResult(private_key=str(priv_path), public_key=str(pub_path), key_id=key_id_of(pub))


def load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise BundleError("signing key not found", where=str(path),
                          fix="create one with `appliance bundle keygen`") from None
    except (ValueError, TypeError) as exc:
        raise BundleError(f"not an unencrypted PEM private key: {exc}", where=str(path),
                          fix="use the .key file written by `appliance bundle keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("signing key is not an ed25519 key", where=str(path),
                          fix="create one with `appliance bundle keygen`")
    return key


def load_public_key(path: Path) -> TrustedKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise BundleError("public key not found", where=str(path),
                          fix="give the .pub file written by `appliance bundle keygen`") from None
    except (ValueError, TypeError) as exc:
        raise BundleError(f"not a PEM public key: {exc}", where=str(path),
                          fix="give the .pub file written by `appliance bundle keygen`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("public key is not an ed25519 key", where=str(path),
                          fix="give the .pub file written by `appliance bundle keygen`")
    return TrustedKey(key_id=key_id_of(key), path=str(path), key=key)


def _keys_in(path: Path) -> list[TrustedKey]:
    if path.is_dir():
        return [load_public_key(p) for p in sorted(path.glob("*.pub"))]
    if path.exists():
        return [load_public_key(path)]
    return []


def trusted_keys(pubkey: Path | None = None) -> tuple[list[TrustedKey], str]:
    """The keys to verify against, and where they came from (for messages)."""
    if pubkey is not None:
        return [load_public_key(pubkey)], str(pubkey)
    env = os.environ.get(ENV_PUBKEYS)
    if env:
        keys: list[TrustedKey] = []
        for part in [p for p in env.split(os.pathsep) if p]:
            keys.extend(_keys_in(Path(part)))
        return keys, f"${ENV_PUBKEYS}"
    d = trust_dir()
    return _keys_in(d), str(d)


def trust_key(pub_path: Path) -> TrustedKey:
    """Install a public key in the node's trust directory (``appliance bundle trust``)."""
    key = load_public_key(pub_path)
    d = trust_dir()
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{key.key_id}.pub"
    write_atomic(target, pub_path.read_bytes(), mode=0o644)
    return TrustedKey(key_id=key.key_id, path=str(target), key=key.key)


def sign(manifest_bytes: bytes, private_key) -> bytes:
    sig = private_key.sign(manifest_bytes)
    doc = {"alg": "ed25519", "key_id": key_id_of(private_key.public_key()),
           "signature": base64.b64encode(sig).decode()}
    return (json.dumps(doc, sort_keys=True) + "\n").encode()


def verify_signature(manifest_bytes: bytes, sig_bytes: bytes, keys: list[TrustedKey], keys_from: str,
                     where: str) -> TrustedKey:
    """Return the trusted key that signed ``manifest_bytes``; raise BundleError otherwise."""
    from cryptography.exceptions import InvalidSignature

    try:
        doc = json.loads(sig_bytes.decode("utf-8"))
        if doc.get("alg") != "ed25519":
            raise ValueError(f"unsupported algorithm {doc.get('alg')!r}")
        signature = base64.b64decode(doc["signature"], validate=True)
        key_id = str(doc.get("key_id", ""))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BundleError(f"manifest.sig is malformed: {exc}", where=where,
                          fix="rebuild the bundle with `appliance bundle create`") from None
    if not keys:
        raise BundleError(f"no trusted bundle keys found in {keys_from}", where=where,
                          fix=f"install the vendor's public key: appliance bundle trust KEY.pub "
                              f"(or set {ENV_PUBKEYS})")
    matching = [k for k in keys if k.key_id == key_id]
    if not matching:
        raise BundleError(f"signed by key {key_id or '?'}, which is not trusted on this node "
                          f"(trusted: {', '.join(k.key_id for k in keys)} from {keys_from})", where=where,
                          fix="use a bundle signed by your vendor's key, or install that key with "
                              "`appliance bundle trust`")
    for k in matching:
        try:
            k.key.verify(signature, manifest_bytes)
            return k
        except InvalidSignature:
            continue
    raise BundleError(f"manifest signature does not verify with trusted key {key_id}: the manifest was "
                      f"altered or the signature forged", where=where,
                      fix="get an intact copy of the bundle from your vendor")
