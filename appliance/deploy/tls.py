"""The box's TLS certificate: the admin's own, or a self-signed one made once by ``init``.

Why: the gateway and the apps carry API keys, passwords and session cookies. On loopback that
traffic never leaves the host; served on the LAN it must be encrypted, so ``init --bind`` with a
non-loopback address requires TLS unless the installer says ``--insecure-http``. Most boxes have
no certificate authority at hand when they are installed, so ``init`` then makes a self-signed
certificate (ECDSA P-256, the box's addresses and host name as subject alternative names) and
prints its SHA-256 fingerprint, which users compare the first time their browser asks. An
admin's certificate (``--tls-cert`` / ``--tls-key``) is checked here -- readable PEM, the key
belongs to the certificate, not expired -- before anything changes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.atomic import write_atomic
from appliance.errors import UsageError
from appliance.runtime.compose import TLS_GID
from appliance.runtime.compose import tls_dir as _tls_dir

LOG = logging.getLogger(__name__)
CERT_FILENAME = "cert.pem"
KEY_FILENAME = "key.pem"
SELF_SIGNED_DAYS = 825   # the longest validity browsers accept for a server certificate


class TlsCertificate(BaseModel):
    cert_path: str
    key_path: str
    fingerprint_sha256: str = Field(description="hex pairs separated by ':' (what browsers show)")
    not_after: str = Field(description="ISO 8601, UTC")
    self_signed: bool
    created: bool = Field(description="True when init made it now")
    names: list[str] = Field(default_factory=list, description="subject alternative names")


def tls_dir(root: Path | None = None) -> Path:
    """Where the box's certificate is kept (bound read-only into the gateway and apps)."""
    return _tls_dir(root)


def _key_group() -> int | None:
    """The group that may read the key (the gateway's and apps' supplementary group), as root."""
    return TLS_GID if os.geteuid() == 0 else None


def needs_tls(bind_ip: str) -> bool:
    """Anything but loopback reaches the network."""
    return not ipaddress.ip_address(bind_ip).is_loopback


def _fingerprint(cert) -> str:
    from cryptography.hazmat.primitives import hashes

    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _names(cert) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
           [str(v) for v in san.get_values_for_type(x509.IPAddress)]


def _not_after(cert) -> dt.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=dt.timezone.utc)


def load_certificate(cert_path: str | Path, key_path: str | Path, *, self_signed: bool = False,
                     created: bool = False, where: str = "--tls-cert") -> TlsCertificate:
    """Check an admin's (or our) certificate and key; one-line UsageError naming the file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = Path(cert_path), Path(key_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read the TLS certificate {cert_path}: {exc.strerror or exc}", where=where,
                         fix="give the path of a PEM certificate file") from None
    except ValueError:
        raise UsageError(f"{cert_path} is not a PEM certificate", where=where,
                         fix="give a PEM file (-----BEGIN CERTIFICATE-----), the server's certificate first") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise UsageError(f"cannot read the TLS key {key_path}: {exc.strerror or exc}", where="--tls-key",
                         fix="give the path of the certificate's PEM private key") from None
    except (ValueError, TypeError):
        raise UsageError(f"{key_path} is not an unencrypted PEM private key", where="--tls-key",
                         fix="give the key without a passphrase (openssl pkey -in KEY -out key.pem)") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise UsageError(f"the key {key_path} does not belong to the certificate {cert_path}", where="--tls-key",
                         fix="give the private key the certificate was issued for")
    not_after = _not_after(cert)
    if not_after <= dt.datetime.now(dt.timezone.utc):
        raise UsageError(f"the TLS certificate {cert_path} expired on {not_after:%Y-%m-%d}", where=where,
                         fix="renew it, or remove it and let init make a self-signed one")
    return TlsCertificate(cert_path=str(cert_path), key_path=str(key_path), fingerprint_sha256=_fingerprint(cert),
                          not_after=not_after.isoformat(), self_signed=self_signed, created=created,
                          names=_names(cert))


def _subject_names(bind_ip: str) -> tuple[list[str], list]:
    """Host names and addresses the certificate names: the host's, the bind address and loopback."""
    host = socket.gethostname()
    dns = sorted({host, "localhost"} | ({socket.getfqdn()} if "." in socket.getfqdn() else set()))
    addresses = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    addr = ipaddress.ip_address(bind_ip)
    if addr.is_unspecified:
        from appliance.deploy.site import host_addresses

        addresses |= {ipaddress.ip_address(a) for a in host_addresses()
                      if not ipaddress.ip_address(a).is_link_local}
    else:
        addresses.add(addr)
    return dns, sorted(addresses, key=lambda a: (a.version, int(a)))


def ensure_self_signed(bind_ip: str, root: Path | None = None) -> TlsCertificate:
    """The box's self-signed certificate, made once (kept while its files are valid and it names
    the bind address); the key written atomically, 0640, group TLS_GID (the gateway and apps
    read it as that supplementary group; nobody else)."""
    directory = tls_dir(root)
    cert_path, key_path = directory / CERT_FILENAME, directory / KEY_FILENAME
    if cert_path.is_file() and key_path.is_file():
        try:
            current = load_certificate(cert_path, key_path, self_signed=True)
        except UsageError:
            current = None
        addr = ipaddress.ip_address(bind_ip)
        if current is not None and (addr.is_unspecified or str(addr) in current.names):
            return current
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    dns, addresses = _subject_names(bind_ip)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "appliance (self-signed)")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]
                                                       + [x509.IPAddress(a) for a in addresses]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o640, owner_gid=_key_group())
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    LOG.info("made a self-signed TLS certificate for %s", ", ".join(dns + [str(a) for a in addresses]))
    return load_certificate(cert_path, key_path, self_signed=True, created=True)


def install_certificate(cert_path: str | Path, key_path: str | Path, root: Path | None = None) -> TlsCertificate:
    """An admin's certificate and key, checked, copied into the box's TLS directory (the admin's
    files may stay readable by root alone; the copy of the key is 0640, group TLS_GID)."""
    checked = load_certificate(cert_path, key_path)
    directory = tls_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    cert_dst, key_dst = directory / CERT_FILENAME, directory / KEY_FILENAME
    try:
        write_atomic(key_dst, Path(key_path).read_bytes(), mode=0o640, owner_gid=_key_group())
        write_atomic(cert_dst, Path(cert_path).read_bytes(), mode=0o644)
    except OSError as exc:
        raise UsageError(f"cannot install the TLS certificate: {exc.strerror or exc}", where=str(directory),
                         fix="run as root, or set APPLIANCE_DATA_DIR to a directory you own") from None
    return checked.model_copy(update={"cert_path": str(cert_dst), "key_path": str(key_dst)})


def ensure(settings, root: Path | None = None) -> TlsCertificate | None:
    """The certificate ``settings`` ask for (None without TLS): the admin's, installed, or the
    self-signed one for the bind address."""
    if not settings.tls:
        return None
    if settings.tls_cert_source:
        return install_certificate(settings.tls_cert_source, settings.tls_key_source, root)
    return ensure_self_signed(settings.bind_ip, root)
