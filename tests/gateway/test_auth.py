"""The gateway's sign-in: auth.py's decisions on real files written by the appliance library, and
authweb.py's routes on a real aiohttp server on loopback, driven by a real HTTP client (urllib)."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time

import pytest
from gwtest import AuthServer, fetch, gateway_modules, redeem_link, session_cookie, sign_in

from appliance.gateway import users as U
from appliance.paths import data_dir

auth_mod, authweb = gateway_modules()
PW = "correct horse battery staple"


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gwdir():
    U.add_user("alice", role="admin", password=PW)
    U.add_user("bob", password=PW)
    return data_dir() / "gateway"


@pytest.fixture
def server(gwdir):
    s = AuthServer(gwdir)
    yield s
    s.stop()


def reload(a) -> None:
    a.files.reload()


class Hasher:
    """Stands in for Auth's PasswordHasher (slotted: its methods cannot be patched): the real one,
    with ``before(hash)`` called first."""

    def __init__(self, real, before):
        self.real, self.before = real, before

    def verify(self, h, p):
        self.before(h)
        return self.real.verify(h, p)


# ---- auth.py ------------------------------------------------------------------------------------
def test_password_sign_in_gives_a_session_with_user_and_role(gwdir):
    a = auth_mod.Auth(str(gwdir))
    token = a.login_password("alice", PW)
    assert token and token.startswith("v1.") and PW not in token
    assert a.session(token) == {"user": "alice", "role": "admin", "expires_at": pytest.approx(time.time() + 43200,
                                                                                             abs=60)}
    assert a.login_password("alice", PW + "x") is None
    assert a.login_password("nobody", PW) is None
    assert a.session(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None  # signature
    forged = token.split(".")
    forged[1] = forged[1][::-1]
    assert a.session(".".join(forged)) is None
    assert a.session("") is None and a.session("v1.x") is None and a.session("x" * 5000) is None


def test_unknown_names_and_passwordless_users_cost_one_argon2_check_too(gwdir):
    U.ensure_first_admin(base_url="http://h:1")  # admin exists (alice): nothing made
    U.add_user("linkonly", password=None)
    a = auth_mod.Auth(str(gwdir))
    calls = []
    a._hasher = Hasher(a._hasher, calls.append)
    assert a.login_password("nobody", PW) is None
    assert a.login_password("linkonly", PW) is None
    assert a.login_password("bob", PW)
    assert len(calls) == 3 and calls[0] == calls[1] == a._dummy_hash and calls[2] != a._dummy_hash


def test_passwd_and_remove_end_sessions_within_a_reload(gwdir):
    a = auth_mod.Auth(str(gwdir))
    bob = a.login_password("bob", PW)
    alice = a.login_password("alice", PW)
    U.set_password("bob", PW + "!")
    reload(a)
    assert a.session(bob) is None and a.session(alice)["user"] == "alice"
    assert a.login_password("bob", PW) is None and a.login_password("bob", PW + "!")
    U.add_user("root", role="admin", password=PW)
    U.remove_user("alice")
    reload(a)
    assert a.session(alice) is None and a.login_password("alice", PW) is None


def test_sessions_expire_and_a_new_session_key_ends_them_all(gwdir):
    clock = Clock()
    a = auth_mod.Auth(str(gwdir), clock=clock)
    token = a.login_password("bob", PW)
    clock.now += 12 * 3600 - 5
    assert a.session(token)
    clock.now += 10
    assert a.session(token) is None
    clock.now = time.time()
    token = a.login_password("bob", PW)
    (gwdir / "session.key").unlink()
    reload(a)
    assert not a.ready and a.session(token) is None and a.login_password("bob", PW) is None
    U.export_users_files()  # a new key
    reload(a)
    assert a.ready and a.session(token) is None and a.session(a.login_password("bob", PW))


def test_a_link_works_once_even_across_restarts_and_not_after_10_minutes(gwdir):
    link = U.create_login_link("bob", base_url="http://h:1")
    token = link.url.rsplit("=", 1)[1]
    a = auth_mod.Auth(str(gwdir))
    got = a.redeem_link(token)
    assert got and got[1] == "bob" and a.session(got[0])["user"] == "bob"
    assert a.redeem_link(token) is None
    assert auth_mod.Auth(str(gwdir)).redeem_link(token) is None  # a restarted gateway knows it was used
    used = json.loads((gwdir / "links-used.json").read_text())["used"]
    assert list(used) == [U.token_sha256(token)] and token not in (gwdir / "links-used.json").read_text()
    U.export_users_files()  # the CLI takes the use over: the link leaves links.json
    assert json.loads((gwdir / "links.json").read_text())["links"] == {}
    # expiry: valid at 599 s, refused at 601 s
    later = U.create_login_link("bob", base_url="http://h:1").url.rsplit("=", 1)[1]
    clock = Clock()
    b = auth_mod.Auth(str(gwdir), clock=clock)
    clock.now += 601
    assert b.redeem_link(later) is None
    clock.now -= 2
    assert b.redeem_link(later)[1] == "bob"
    assert b.redeem_link("not-a-token-" * 3) is None and b.redeem_link("") is None


def test_two_gateways_redeem_a_link_only_once():
    """Blue/green: two processes on one config dir (here two Auth objects, many threads each)."""
    U.add_user("bob", password=PW)
    gwdir = data_dir() / "gateway"
    token = U.create_login_link("bob", base_url="http://h:1").url.rsplit("=", 1)[1]
    gateways = [auth_mod.Auth(str(gwdir)), auth_mod.Auth(str(gwdir))]
    wins = []
    threads = [threading.Thread(target=lambda g=g: wins.append(g.redeem_link(token))) for g in gateways * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for w in wins if w) == 1


def test_sign_out_is_for_good(gwdir):
    a = auth_mod.Auth(str(gwdir))
    token = a.login_password("bob", PW)
    other = a.login_password("bob", PW)
    assert a.logout(token)
    assert a.session(token) is None and a.session(other)  # only that session
    assert auth_mod.Auth(str(gwdir)).session(token) is None  # after a restart too


def test_five_failures_per_name_or_address_in_a_minute_throttle(gwdir):
    clock = Clock()
    a = auth_mod.Auth(str(gwdir), clock=clock)
    for _ in range(5):
        assert a.login_password("bob", "wrong password!", client="10.0.0.1") is None
    with pytest.raises(auth_mod.Throttled) as info:
        a.login_password("bob", PW, client="10.0.0.2")  # the name is throttled, even with the right password
    assert 1 <= info.value.retry_after_s <= 61
    with pytest.raises(auth_mod.Throttled):
        a.login_password("alice", PW, client="10.0.0.1")  # and so is the address, for any name
    assert a.login_password("alice", PW, client="10.0.0.3")
    clock.now += 61
    assert a.login_password("bob", PW, client="10.0.0.1")


def test_a_corrupt_users_file_means_nobody(gwdir):
    a = auth_mod.Auth(str(gwdir))
    token = a.login_password("bob", PW)
    (gwdir / "users.json").write_text("{not json")
    reload(a)
    assert a.session(token) is None and a.login_password("bob", PW) is None and "users.json" in a.files.errors


# ---- authweb.py over HTTP -------------------------------------------------------------------------
def post(url, obj=None, *, form: str | None = None, headers=None):
    if form is not None:
        data, ctype = form.encode(), "application/x-www-form-urlencoded"
    else:
        data, ctype = json.dumps(obj).encode(), "application/json"
    return fetch(url, method="POST", data=data, headers={"Content-Type": ctype, **(headers or {})})


def test_json_sign_in_sets_the_cookie_and_the_apps_can_ask_who(server):
    status, hdrs, body = post(server.url + "/auth/login", {"name": "bob", "password": PW})
    assert status == 200 and json.loads(body) == {"user": "bob", "role": "user"}
    set_cookie = next(v for v in hdrs.get_all("Set-Cookie") if v.startswith("appliance_session="))
    attrs = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attrs and "secure" not in attrs  # plain HTTP here
    assert "SameSite=Strict" in set_cookie and "Path=/" in set_cookie and "Max-Age=43200" in set_cookie
    cookie = session_cookie(hdrs)
    status, hdrs, body = fetch(server.url + "/auth/session", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body) == {"user": "bob", "role": "user"}
    assert hdrs["Cache-Control"] == "no-store"
    status, _, body = fetch(server.url + "/auth/session")
    assert status == 401 and json.loads(body) == {"error": "sign in required", "login_url": "/auth/login"}
    status, _, page = fetch(server.url + "/auth/", headers={"Cookie": cookie})
    assert status == 200 and b'data-user="bob"' in page
    assert fetch(server.url + "/auth/")[0] == 303
    # logs: who and how it went, never the password or the session
    text = json.dumps(server.records)
    assert {"event": "sign_in", "method": "password", "outcome": "ok", "user": "bob", "client": "127.0.0.1"} in \
        server.records
    assert PW not in text and cookie.split("=", 1)[1] not in text


def test_wrong_password_unknown_name_bad_bodies(server):
    assert post(server.url + "/auth/login", {"name": "bob", "password": "nope nope nope"})[0] == 401
    status, _, body = post(server.url + "/auth/login", {"name": "mallory", "password": PW})
    assert status == 401 and json.loads(body)["error"] == "wrong name or password"
    assert {"event": "sign_in", "method": "password", "outcome": "refused", "user": None,
            "client": "127.0.0.1"} in server.records  # an unknown name is not logged (it may be a password)
    assert post(server.url + "/auth/login", ["bob"])[0] == 400
    assert post(server.url + "/auth/login", {"name": "bob"})[0] == 400
    status, _, _ = fetch(server.url + "/auth/login", method="POST", data=b"name=bob",
                         headers={"Content-Type": "text/plain"})
    assert status == 415
    big = json.dumps({"name": "bob", "password": "x" * 17000}).encode()
    assert fetch(server.url + "/auth/login", method="POST", data=big,
                 headers={"Content-Type": "application/json"})[0] == 413
    # chunked, without a length: refused as it streams in
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/auth/login", body=iter([b"{" + b" " * 8000] * 3), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 413
    conn.close()


def test_form_sign_in_redirects_to_a_same_host_next_only(server):
    app_page = "http://127.0.0.1:1/app/?q=1"
    for nxt, where in ((app_page, app_page), ("/auth/", "/auth/"), ("http://evil.example/", "/auth/"),
                       ("//evil.example/x", "/auth/"), ("/\\evil.example", "/auth/"),
                       ("http://user:pw@127.0.0.1:1/", "/auth/"), ("javascript:alert(1)", "/auth/")):
        from urllib.parse import urlencode

        status, hdrs, _ = post(server.url + "/auth/login", form=urlencode({"name": "bob", "password": PW,
                                                                           "next": nxt}))
        assert status == 303 and hdrs["Location"] == where, nxt
        assert session_cookie(hdrs)
    status, _, page = post(server.url + "/auth/login", form="name=bob&password=wrong+password+x")
    assert status == 401 and b"Wrong name or password." in page and b'id="message"' in page


def test_the_sign_in_page_is_self_contained_and_escapes_next(server):
    status, hdrs, page = fetch(server.url + "/auth/login?next=" + '"><script>alert(1)</script>')
    text = page.decode()
    assert status == 200 and hdrs["Content-Type"].startswith("text/html")
    assert "<script" not in text and "&quot;&gt;&lt;script&gt;" in text
    assert "http://" not in text and "https://" not in text  # nothing loaded from elsewhere
    csp = hdrs["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert hdrs["Referrer-Policy"] == "same-origin" and hdrs["X-Frame-Options"] == "DENY"
    assert 'name="password"' in text and 'action="/auth/login"' in text


def test_cross_site_requests_are_refused(server):
    cookie = sign_in(server.url, "bob", PW)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        assert post(server.url + "/auth/login", {"name": "bob", "password": PW}, headers=headers)[0] == 403, headers
        status, _, _ = post(server.url + "/auth/logout", {}, headers={"Cookie": cookie, **headers})
        assert status == 403, headers
    assert fetch(server.url + "/auth/session", headers={"Cookie": cookie})[0] == 200  # still signed in
    same = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert post(server.url + "/auth/login", {"name": "bob", "password": PW}, headers=same)[0] == 200


def test_a_one_time_link_signs_in_once(server):
    link = U.create_login_link("bob", base_url=server.url)
    target = "http://127.0.0.1:9/page"
    status, hdrs, _ = fetch(link.url + "&next=" + target)
    assert status == 303 and hdrs["Location"] == target and session_cookie(hdrs)
    status, hdrs, page = fetch(link.url)
    assert status == 401 and session_cookie(hdrs) is None and b"does not work any more" in page
    assert [r["outcome"] for r in server.records if r.get("method") == "link"] == ["ok", "refused"]
    assert link.url.rsplit("=", 1)[1] not in json.dumps(server.records)


def test_sign_out_clears_the_cookie_and_ends_the_session(server):
    cookie = sign_in(server.url, "bob", PW)
    status, hdrs, body = post(server.url + "/auth/logout", {}, headers={"Cookie": cookie})
    assert status == 200 and json.loads(body) == {"signed_out": True}
    cleared = next(v for v in hdrs.get_all("Set-Cookie") if v.startswith("appliance_session="))
    assert "Max-Age=0" in cleared
    assert fetch(server.url + "/auth/session", headers={"Cookie": cookie})[0] == 401
    status, hdrs, _ = post(server.url + "/auth/logout", form="", headers={"Cookie": sign_in(server.url, "bob", PW)})
    assert status == 303 and hdrs["Location"] == "/auth/login"


def test_throttled_sign_in_is_429_with_retry_after(server):
    for _ in range(5):
        assert post(server.url + "/auth/login", {"name": "bob", "password": "wrong password!"})[0] == 401
    status, hdrs, _ = post(server.url + "/auth/login", {"name": "bob", "password": PW})
    assert status == 429 and 1 <= int(hdrs["Retry-After"]) <= 61


def test_argon2_runs_off_the_event_loop(gwdir):
    """While a password check is in progress (held in its worker thread), the server still answers."""
    a = auth_mod.Auth(str(gwdir))
    gate, entered = threading.Event(), threading.Event()

    def held(_h):
        entered.set()
        gate.wait(20)

    a._hasher = Hasher(a._hasher, held)
    s = AuthServer(gwdir, auth=a)
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=post(s.url + "/auth/login",
                                                                 {"name": "bob", "password": PW})))
        t.start()
        assert entered.wait(10)
        t0 = time.monotonic()
        assert fetch(s.url + "/auth/session", timeout_s=5)[0] == 401
        assert time.monotonic() - t0 < 2 and not result  # answered while the login still waits
        gate.set()
        t.join(20)
        assert result["r"][0] == 200
    finally:
        gate.set()
        s.stop()


def _self_signed(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_over_tls_the_cookie_is_secure(gwdir, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    s = AuthServer(gwdir, ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        status, hdrs, _ = fetch(s.url + "/auth/login", method="POST", context=client_ctx,
                                data=json.dumps({"name": "bob", "password": PW}).encode(),
                                headers={"Content-Type": "application/json", "Origin": s.url})
        assert status == 200
        set_cookie = next(v for v in hdrs.get_all("Set-Cookie") if v.startswith("appliance_session="))
        assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        # an http:// Origin is another origin than https://
        assert fetch(s.url + "/auth/login", method="POST", context=client_ctx,
                     data=json.dumps({"name": "bob", "password": PW}).encode(),
                     headers={"Content-Type": "application/json",
                              "Origin": s.url.replace("https", "http")})[0] == 403
    finally:
        s.stop()


def test_redeem_link_helper_and_sign_in_helper_work_against_the_server(server):
    assert sign_in(server.url + "/v1", "alice", PW).startswith("appliance_session=v1.")
    cookie = redeem_link(U.create_login_link("alice", base_url=server.url).url)
    assert json.loads(fetch(server.url + "/auth/session", headers={"Cookie": cookie})[2])["role"] == "admin"
