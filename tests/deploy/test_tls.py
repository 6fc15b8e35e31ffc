"""The box's TLS certificate (appliance.deploy.tls): made once, checked, refused in one line."""

from __future__ import annotations

import os
import ssl
import stat

import pytest

from appliance.deploy import tls
from appliance.errors import UsageError
from appliance.runtime.compose import TLS_GID


def test_a_self_signed_certificate_is_made_once_names_the_bind_address_and_serves(tmp_path):
    made = tls.ensure_self_signed("127.0.0.1", tmp_path)
    assert made.created and made.self_signed and "127.0.0.1" in made.names and "localhost" in made.names
    assert len(made.fingerprint_sha256.split(":")) == 32
    key_stat = (tmp_path / "tls" / "key.pem").stat()
    assert stat.S_IMODE(key_stat.st_mode) == 0o640         # the gateway and apps read it as its group, no one else
    if os.geteuid() == 0:
        assert key_stat.st_gid == TLS_GID
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


def test_an_admins_certificate_is_installed_as_a_copy_the_services_can_read(tmp_path):
    made = tls.ensure_self_signed("127.0.0.1", tmp_path / "admin")
    installed = tls.install_certificate(made.cert_path, made.key_path, tmp_path / "box")
    assert installed.cert_path == str(tmp_path / "box" / "tls" / "cert.pem")
    assert installed.fingerprint_sha256 == made.fingerprint_sha256
    assert stat.S_IMODE(os.stat(installed.key_path).st_mode) == 0o640


def test_a_bind_beyond_loopback_needs_tls_unless_insecure_http_is_explicit(tmp_path):
    from appliance.deploy.requests import RESET, tls_changes
    from appliance.deploy.site import SiteConfig

    lan = SiteConfig(bind_ip="0.0.0.0")
    assert tls_changes(SiteConfig(), tls_cert=None, tls_key=None, insecure_http=None) == {}
    assert tls_changes(lan, tls_cert=None, tls_key=None, insecure_http=None) == {
        "tls": True, "tls_cert_source": RESET, "tls_key_source": RESET}          # self-signed, made by the deploy
    assert tls_changes(lan, tls_cert=None, tls_key=None, insecure_http=True)["tls"] is False
    recorded = SiteConfig(bind_ip="0.0.0.0", insecure_http=True)
    assert tls_changes(recorded, tls_cert=None, tls_key=None, insecure_http=None) == {}   # kept as recorded
    made = tls.ensure_self_signed("127.0.0.1", tmp_path)
    given = tls_changes(SiteConfig(), tls_cert=made.cert_path, tls_key=made.key_path, insecure_http=None)
    assert given["tls"] is True and given["tls_cert_source"] == made.cert_path
    with pytest.raises(UsageError, match="go together"):
        tls_changes(lan, tls_cert=made.cert_path, tls_key=None, insecure_http=None)
    with pytest.raises(UsageError, match="cannot be combined"):
        tls_changes(lan, tls_cert=made.cert_path, tls_key=made.key_path, insecure_http=True)


def test_init_refuses_a_bad_certificate_in_one_line_before_anything_changes(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    env = {**__import__("os").environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data")}
    res = subprocess.run([sys.executable, "-m", "appliance", "init", "--demo", "--yes", "--tls-cert", str(bad),
                          "--tls-key", str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "not a PEM certificate" in res.stderr, res.stderr
    assert not (tmp_path / "data" / "tls").exists()


def test_compose_serves_https_with_the_certificate_and_keeps_the_app_hop_inside():
    from appliance.runtime.compose import GATEWAY_INTERNAL_PORT, TLS_GID, TLS_TARGET, healthcheck
    from appliance.runtime.models import Settings
    from tests.runtime.test_compose import CPU, _stack

    plain = _stack(CPU, demo=True)[1]
    stack = _stack(CPU, demo=True, settings=Settings(tls=True))[1]
    gw = stack.service("gateway")
    assert gw.tls and gw.endpoint().startswith("https://") and stack.endpoints()["gateway"].startswith("https://")
    assert gw.env["GATEWAY_TLS_CERT"] == f"{TLS_TARGET}/cert.pem" and str(TLS_GID) in gw.group_add
    assert gw.env["GATEWAY_INTERNAL_PORT"] == str(GATEWAY_INTERNAL_PORT)
    assert gw.health.port == GATEWAY_INTERNAL_PORT                      # checked on the plain inside port
    for name in stack.apps:
        app = stack.service(name)
        assert app.tls and app.endpoint().startswith("https://") and app.env["APP_TLS_CERT"].startswith(TLS_TARGET)
        assert app.env["GATEWAY_URL"] == f"http://gateway:{GATEWAY_INTERNAL_PORT}/v1"
        assert app.env["GATEWAY_PUBLIC_URL"].startswith("https://")
        assert app.health.probe == "python3-tls" and "ssl" in healthcheck(app.health)["test"][-1]
        assert any(b.target == TLS_TARGET and b.read_only for b in app.binds)
    # without TLS nothing of it: the field stays unset, so definitions recorded before it hash as they did
    assert all(s.tls is None and "GATEWAY_TLS_CERT" not in s.env for s in plain.services)
