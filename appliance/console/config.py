"""Where the console listens and how it reaches the gateway, from the options and the box.

Why its own step: every option is checked before anything listens (one line, exit 2): the bind
address must be one of this host's (the site configuration's by default: the console is reached
where the gateway and apps are), the port 1-65535; anything beyond loopback is served over HTTPS
with the box's certificate, like the gateway (``init`` made or installed it).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass

from appliance.console.server import ConsoleConfig
from appliance.errors import StateError, UsageError


@dataclass
class Listen:
    host: str
    port: int
    ssl_context: ssl.SSLContext | None
    config: ConsoleConfig


WAIT_POLL_S = 5.0


def resolve(*, bind: str | None, port: int, gateway_url: str | None, snapshot: str | None = None,
            store=None, wait: bool = False) -> Listen:
    """Check the options against the box. ``wait``: while nothing is installed yet (no gateway
    to sign in at), poll every 5 s instead of failing -- the systemd unit starts before ``init``."""
    import logging
    import time

    logged = False
    while True:
        try:
            return _resolve(bind=bind, port=port, gateway_url=gateway_url, snapshot=snapshot, store=store)
        except NotInstalled:
            if not wait:
                raise
            if not logged:
                logging.getLogger("appliance.console.config").info(
                    "nothing installed yet: waiting for `appliance init` (checking every %gs)", WAIT_POLL_S)
                logged = True
            time.sleep(WAIT_POLL_S)


class NotInstalled(StateError):
    """No gateway is installed, so nobody could sign in."""


def _resolve(*, bind: str | None, port: int, gateway_url: str | None, snapshot: str | None, store) -> Listen:
    from appliance.deploy import site
    from appliance.deploy.tls import CERT_FILENAME, KEY_FILENAME, needs_tls, tls_dir
    from appliance.gateway.users import gateway_public_url
    from appliance.runtime import labels as L

    if not 1 <= port <= 65535:
        raise UsageError(f"must be 1-65535, got {port}", where="--port", fix="e.g. --port 8070")
    store = site.open_store(store)
    cfg = site.load(store, L.instance())
    host = bind or (cfg.bind_ip if cfg else "127.0.0.1")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"{host!r} is not an IP address", where="--bind",
                         fix="e.g. --bind 127.0.0.1, or the box's LAN address") from None
    site.check_bind(host, where="--bind")
    try:
        gateway = (gateway_url or gateway_public_url(store)).rstrip("/").removesuffix("/v1")
    except StateError:
        raise NotInstalled("no gateway is installed on this box yet: nobody could sign in to the console",
                           where="console", fix="run `appliance init --yes` first, or give --gateway-url") from None
    if not gateway.startswith(("http://", "https://")):
        raise UsageError(f"{gateway!r} is not an http(s) URL", where="--gateway-url",
                         fix="e.g. --gateway-url http://127.0.0.1:8080")
    cert, key = tls_dir() / CERT_FILENAME, tls_dir() / KEY_FILENAME
    tls = bool(cfg and cfg.tls)
    if needs_tls(host) and not tls and not (cfg and cfg.insecure_http):
        raise UsageError(f"{host} reaches the network, and the box serves no TLS", where="--bind",
                         fix="run `appliance init --bind ... ` with TLS first (docs/security.md), or --bind 127.0.0.1")
    context = None
    if tls:
        if not (cert.is_file() and key.is_file()):
            raise UsageError(f"the box serves HTTPS, and its certificate {cert} is missing", where="--bind",
                             fix="run `appliance init --yes` (it makes or installs one)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
    cafile = str(cert) if gateway.startswith("https:") and cert.is_file() else None
    return Listen(host=host, port=port, ssl_context=context,
                  config=ConsoleConfig(auth_url=gateway, auth_cafile=cafile, snapshot=snapshot))
