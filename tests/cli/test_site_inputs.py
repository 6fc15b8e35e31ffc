"""Bad network options are refused at the CLI before anything changes: one line, exit 2.

Each case runs the real CLI against an empty data directory (a real deploy, not only
``--dry-run``, where it matters) and checks that the command left no state behind, so a
refused option never half-applies.
"""

from __future__ import annotations

import ipaddress

import pytest

from appliance.deploy.site import check_bind, host_addresses
from appliance.errors import UsageError
from tests.stack_support import run_cli

# TEST-NET-1 (RFC 5737): never an address of this host
FOREIGN = "192.0.2.77"


def _env(tmp_path) -> dict:
    return {"APPLIANCE_DATA_DIR": str(tmp_path / "data"), "APPLIANCE_NO_LIVE_PROVISION": "1",
            "APPLIANCE_NO_PULL": "1", "APPLIANCE_INSTANCE": "t-inputs"}


def _refused(res, *needles: str) -> None:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], err[-1500:])
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err   # progress lines may precede it
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("args, needles", [
    (["--bind", "notanaddress"], ["bind_ip", "is not an IP address"]),
    (["--bind", FOREIGN], ["bind_ip: 192.0.2.77 is not an address of this host", "0.0.0.0"]),
    (["--gateway-port", "99999"], ["--gateway-port", "99999"]),
    (["--gateway-port", "0"], ["--gateway-port"]),
    (["--app-port-base", "65535"], ["would get port 65536"]),
    (["--gateway-port", "8082", "--app-port-base", "8081"], ["would both use port 8082"]),
])
@pytest.mark.parametrize("mode", [["--dry-run"], []])
def test_init_refuses_bad_network_options_before_anything_changes(tmp_path, args, needles, mode):
    res = run_cli("init", "--demo", "--yes", *mode, *args, env=_env(tmp_path), timeout=120)
    _refused(res, *needles)
    data = tmp_path / "data"
    assert not (data / "state.db").exists() or _no_release(data)


def _no_release(data) -> bool:
    import sqlite3

    conn = sqlite3.connect(data / "state.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "site_config" in tables and conn.execute("SELECT COUNT(*) FROM site_config").fetchone()[0]:
            return False
        return "releases" not in tables or conn.execute("SELECT COUNT(*) FROM releases").fetchone()[0] == 0
    finally:
        conn.close()


def test_config_set_refuses_an_address_of_another_host(tmp_path):
    res = run_cli("config", "set", f"bind_ip={FOREIGN}", env=_env(tmp_path), timeout=60)
    _refused(res, "is not an address of this host")
    assert not (tmp_path / "data" / "state.db").exists() or _no_release(tmp_path / "data")


def test_the_host_s_own_addresses_every_interface_and_loopback_are_accepted():
    own = sorted(a for a in host_addresses() if not ipaddress.ip_address(a).is_loopback)
    for ip in ["0.0.0.0", "::", "127.0.0.1", "127.0.0.2", "::1", *own]:
        check_bind(ip, where="--bind")
    with pytest.raises(UsageError, match="not an address of this host"):
        check_bind(FOREIGN, where="--bind")
    with pytest.raises(UsageError, match="use one of 10.1.2.3"):
        check_bind("10.9.9.9", where="--bind", addresses={"10.1.2.3", "fe80::1"})
