"""The box's TLS certificate (appliance.deploy.tls): made once, checked, refused in one line."""

from __future__ import annotations

import ssl
import stat

import pytest

from appliance.deploy import tls
from appliance.errors import UsageError


def test_a_self_signed_certificate_is_made_once_names_the_bind_address_and_serves(tmp_path):
    made = tls.ensure_self_signed("127.0.0.1", tmp_path)
    assert made.created and made.self_signed and "127.0.0.1" in made.names and "localhost" in made.names
    assert len(made.fingerprint_sha256.split(":")) == 32
    assert stat.S_IMODE((tmp_path / "tls" / "key.pem").stat().st_mode) == 0o600
    again = tls.ensure_self_signed("127.0.0.1", tmp_path)
    assert not again.created and again.fingerprint_sha256 == made.fingerprint_sha256
    # a real TLS server context takes it (what the gateway does with GATEWAY_TLS_CERT/KEY)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(made.cert_path, made.key_path)
    # another bind address the certificate does not name: a new one
    other = tls.ensure_self_signed("10.1.2.3", tmp_path)
    assert other.created and "10.1.2.3" in other.names and other.fingerprint_sha256 != made.fingerprint_sha256


def test_an_admins_certificate_is_checked_before_anything_changes(tmp_path):
    a = tls.ensure_self_signed("127.0.0.1", tmp_path / "a")
    b = tls.ensure_self_signed("127.0.0.1", tmp_path / "b")
    assert tls.load_certificate(a.cert_path, a.key_path).fingerprint_sha256 == a.fingerprint_sha256
    with pytest.raises(UsageError, match="does not belong"):
        tls.load_certificate(a.cert_path, b.key_path)
    with pytest.raises(UsageError, match="not a PEM certificate"):
        tls.load_certificate(a.key_path, a.key_path)
    with pytest.raises(UsageError, match="cannot read the TLS certificate"):
        tls.load_certificate(tmp_path / "missing.pem", a.key_path)
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        tls.load_certificate(a.cert_path, a.cert_path)


def test_only_loopback_binds_go_without_tls():
    assert not tls.needs_tls("127.0.0.1") and not tls.needs_tls("::1")
    assert tls.needs_tls("0.0.0.0") and tls.needs_tls("192.168.1.10") and tls.needs_tls("::")
