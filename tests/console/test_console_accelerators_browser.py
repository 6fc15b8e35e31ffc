"""The overview's accelerator table and charts, drawn in a real headless Chromium for a box with
accelerators: the hardware comes from the H200 node snapshot (the only thing faked), the history
from the agent's own sampling of that snapshot (``samples_from``), the sign-in from the gateway's
real routes. No Docker: nothing is installed, so the status is "not installed" beside the devices.
"""

from __future__ import annotations

import time

import pytest
from consoletest import ConsoleServer, wait_until
from gwtest import AuthServer, console_errors, needs_webdriver, signed_in_url, webdriver_chromium

from appliance.console.server import Console, ConsoleConfig
from appliance.gateway import users as U
from appliance.paths import data_dir
from appliance.state.store import StateStore
from tests.support import H200

pytestmark = [pytest.mark.browser]




@needs_webdriver
def test_the_overview_draws_each_accelerators_memory_and_utilisation_from_the_history():
    from selenium.webdriver.common.by import By

    from appliance.agent.history import History, samples_from
    from appliance.inventory.detect import detect

    U.add_user("alice", role="admin", password="a long console test passphrase")
    store = StateStore.open_default()
    inventory = detect(snapshot=str(H200), usage=True)
    devices = [a for a in inventory.accelerators if a.vendor == "nvidia"]
    assert devices, "the H200 snapshot has NVIDIA devices"
    history, now = History(store), time.time()
    for i in range(3):  # three agent passes 15 s apart; the memory in use grows between them
        samples = samples_from(inventory, [], {})
        for a in devices:
            samples[f"acc.nvidia.{a.index}.memory_used_mib"] = 1024.0 * (i + 1) + a.index
            samples[f"acc.nvidia.{a.index}.utilization_pct"] = 10.0 * i
        history.record(samples, ts=now - 45 + 15 * i)
    auth = AuthServer(data_dir() / "gateway")
    server = ConsoleServer(Console(ConsoleConfig(auth_url=auth.url, snapshot=str(H200)), store=store))
    driver = webdriver_chromium()
    try:
        link = U.create_login_link("alice", base_url=auth.url).url
        driver.get(signed_in_url(link, server.url + "/"))
        table = wait_until(driver, lambda d: d.find_element(By.ID, "accelerators")).text
        for a in devices:
            assert f"nvidia:{a.index}" in table, table
        assert devices[0].model in table
        for cid in ("chart-acc-memory", "chart-acc-util"):
            fig = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"#{cid}.drawn"))
            assert int(fig.find_element(By.CSS_SELECTOR, ".plot").get_attribute("data-points")) >= 3
            traces = driver.execute_script(
                "return arguments[0].querySelector('.plot').data.map(t => [t.name, t.y.length])", fig)
            assert sorted(t[0] for t in traces) == sorted(f"nvidia.{a.index}" for a in devices), traces
            assert all(n == 3 for _, n in traces), traces
        assert console_errors(driver) == []
    finally:
        driver.quit()
        server.stop()
        auth.stop()
        store.close()
