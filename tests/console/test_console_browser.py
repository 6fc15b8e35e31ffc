"""The console on a real stack, in a real headless Chromium (selenium): what an admin does.

A templated demo stack (real gateway, apps and engines in Docker), two passes of the real node
agent (``appliance agent --once``: the history the charts draw), ``appliance console`` as a
process, and the browser signed in through a one-time link. The key made in the page is used
with ``curl`` against the gateway, then revoked in the page and refused.

``APPLIANCE_SCREENSHOTS=DIR`` also saves every page at 1280x800 and at 420 px wide into DIR
(how docs/images/console-*.png were made).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from consoletest import wait_until
from gwtest import (
    console_errors,
    fetch,
    free_port,
    needs_webdriver,
    redeem_link,
    signed_in_url,
    stack_login_link,
    wait_http,
    webdriver_chromium,
)

from appliance.gateway.keys import KEY_PREFIX
from tests.stack_support import DemoStack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.slow]
PAGES = {"overview": "/", "models": "/models", "keys": "/keys", "training": "/training", "releases": "/releases"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = DemoStack(tmp_path_factory.mktemp("console"), "console")
    try:
        res = s.init_demo("--quiet")
        assert res.returncode == 0, f"init failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        created = s.cli("keys", "create", "--name", "console-traffic", "--json")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["key"]
        for i in range(2):  # two agent passes: two points in every history series
            if i == 1:  # traffic between the passes: the per-model counters move
                for _ in range(3):
                    status = _curl_status(s.gateway + "/v1/chat/completions", key, body={
                        "model": "demo-chat", "messages": [{"role": "user", "content": "hello"}]})
                    assert status == "200", status
                time.sleep(2.5)  # the gateway flushes its usage counters every 2 s
            res = s.cli("agent", "--once", "--json", timeout_s=120)
            assert res.returncode == 0, res.stderr[-2000:]
            time.sleep(1.1)
        yield s
    finally:
        s.purge(down_first=True)


@pytest.fixture(scope="module")
def console(stack, tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("console-log") / "console.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "console", "--port", str(port)],
                            env={**os.environ, **stack.env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout_s=30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        finally:
            log.seek(0)
            print(log.read().decode(errors="replace")[-4000:])




def _curl_status(url: str, key: str, body: dict | None = None) -> str:
    data = ["-H", "Content-Type: application/json", "--data", json.dumps(body)] if body else []
    res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                          "-H", f"Authorization: Bearer {key}", *data, url], capture_output=True, text=True, timeout=20)
    return res.stdout.strip()


def _screenshots(driver, console: str) -> None:
    target = os.environ.get("APPLIANCE_SCREENSHOTS")
    if not target:
        return
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for width, height, tag in ((1280, 800, "wide"), (420, 900, "narrow")):
        driver.set_window_size(width, height)
        for name, path in PAGES.items():
            driver.get(console + path)
            wait_until(driver, lambda d: d.find_element("id", "page"))
            time.sleep(1.5)  # charts drawn
            driver.save_screenshot(str(out / f"console-{name}-{tag}.png"))
    driver.set_window_size(1280, 900)


@needs_webdriver
def test_an_admin_signs_in_sees_the_box_and_manages_a_key(stack, console):
    from selenium.webdriver.common.by import By

    driver = webdriver_chromium()
    try:
        driver.get(signed_in_url(stack_login_link(stack), console + "/"))
        wait_until(driver, lambda d: d.find_element(By.ID, "overall"))
        assert driver.find_element(By.ID, "who").get_attribute("data-role") == "admin"
        node = driver.find_element(By.ID, "node").text
        assert os.uname().nodename in node
        services = driver.find_element(By.ID, "services").text
        for name in ("gateway", "demo-chat"):
            assert name in services, services
        # the services chart: drawn by the chart library, from >= 2 points of the agent's history
        fig = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#chart-services.drawn"))
        assert int(fig.find_element(By.CSS_SELECTOR, ".plot").get_attribute("data-points")) >= 2
        assert fig.find_elements(By.CSS_SELECTOR, ".plot svg")
        # live values refresh without reloading the page
        marker = driver.execute_script("window.__kept = 1; return document.body.getAttribute('data-refreshed')")
        wait_until(driver, lambda d: d.execute_script("return document.body.getAttribute('data-refreshed')") != marker,
              timeout_s=30)
        assert driver.execute_script("return window.__kept") == 1

        # the models page: the traffic between the agent's passes, counted per model and charted
        driver.get(console + "/models")
        usage = wait_until(driver, lambda d: d.find_element(By.ID, "model-usage")).text
        assert "demo-chat" in usage
        row = next(line for line in usage.splitlines() if line.startswith("demo-chat"))
        assert int(row.split()[1]) >= 3, row
        wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#chart-model-requests.drawn"))

        # a key made in the page works with curl, and is refused once revoked in the page
        driver.get(console + "/keys")
        form = wait_until(driver, lambda d: d.find_element(By.ID, "create-key"))
        form.find_element(By.NAME, "name").send_keys("ui-made-key")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        key = wait_until(driver, lambda d: d.find_element(By.ID, "new-key-value").text)
        assert key.startswith(KEY_PREFIX + "_")
        models_url = stack.gateway + "/v1/models"
        assert wait_until(driver, lambda d: _curl_status(models_url, key) == "200", timeout_s=15)
        wait_until(driver, lambda d: "ui-made-key" in d.find_element(By.ID, "keys").text)
        button = driver.find_element(By.CSS_SELECTOR, "button.revoke[data-name='ui-made-key']")
        button.click()
        alert = wait_until(driver, lambda d: d.switch_to.alert)
        assert "Revoke key ui-made-key" in alert.text
        alert.accept()
        wait_until(driver, lambda d: "revoked" in d.find_element(By.ID, "notice").text)
        assert wait_until(driver, lambda d: _curl_status(models_url, key) == "401", timeout_s=15)

        _screenshots(driver, console)
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_a_user_without_the_admin_role_gets_403_on_admin_pages(stack, console):
    res = subprocess.run([sys.executable, "-m", "appliance", "users", "add", "carol", "--password-stdin"],
                         input="a long passphrase for carol\n", capture_output=True, text=True, timeout=60,
                         env={**os.environ, **stack.env})
    assert res.returncode == 0, res.stderr
    cookie = redeem_link(stack_login_link(stack, "carol"))
    for path in ("/", "/models", "/training", "/releases", "/api/overview", "/api/releases"):
        status, _, _ = fetch(console + path, headers={"Cookie": cookie})
        assert status == 403, path
    status, _, body = fetch(console + "/api/keys", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body)["keys"] == []  # carol owns no key; the admin's are not hers


@needs_webdriver
def test_an_admin_rolls_back_from_the_releases_page_after_confirming(stack, console):
    from selenium.webdriver.common.by import By

    res = stack.init_demo("--quiet", "--health-timeout", "300")  # a second release (every service's spec changes)
    assert res.returncode == 0, res.stderr[-2000:]
    second = json.loads(stack.cli("status", "--json").stdout)["release"]["id"]
    driver = webdriver_chromium()
    try:
        driver.get(signed_in_url(stack_login_link(stack), console + "/releases"))
        button = wait_until(driver, lambda d: d.find_element(By.ID, "rollback"))
        assert f"(release {second})" in button.get_attribute("data-from")
        button.click()
        alert = wait_until(driver, lambda d: d.switch_to.alert)
        assert alert.text.startswith("Roll back from ") and "health gates" in alert.text
        alert.dismiss()  # not confirmed: nothing starts
        time.sleep(1)
        assert not driver.find_elements(By.ID, "operation")
        driver.find_element(By.ID, "rollback").click()
        wait_until(driver, lambda d: d.switch_to.alert).accept()
        op = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#operation[data-state=done]"), timeout_s=300)
        assert "finished" in op.text
        assert console_errors(driver) == []
    finally:
        driver.quit()
    release = json.loads(stack.cli("status", "--json").stdout)["release"]
    assert release["id"] > second and release["source"].startswith("rollback to ")
    events = [e for e in json.loads(fetch(console + "/api/releases", headers={
        "Cookie": redeem_link(stack_login_link(stack))})[2])["events"] if e["kind"] == "console"]
    assert any(e["message"] == "admin rolled back: done" for e in events)


def _job(stack, job_id: str) -> dict:
    res = stack.cli("train", "status", job_id, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _submit(stack, dataset: Path, delay_s: str) -> str:
    res = stack.cli("train", "submit", "--model", "demo-chat", "--dataset", str(dataset), "--json", "-q",
                    "--demo-step-delay", delay_s)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)["job"]["id"]


@needs_webdriver
def test_an_admin_cancels_a_running_job_and_serves_a_finished_one_from_the_training_page(stack, console):
    """Real demo trainer containers: one cancelled mid-run after confirming, one served once it
    completed (the same pipeline as ``appliance serve JOB``), then answering through the gateway."""
    from selenium.webdriver.common.by import By

    from tests.train.conftest import CHAT, write_jsonl

    dataset = write_jsonl(stack.root / "faq.jsonl", CHAT * 4)
    slow = _submit(stack, dataset, "2")
    assert wait_for(lambda: (_job(stack, slow)["progress"]["step"] or 0) > 0, 60), _job(stack, slow)
    driver = webdriver_chromium()
    try:
        driver.get(signed_in_url(stack_login_link(stack), console + "/training"))
        button = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"button.cancel[data-id='{slow}']"))
        button.click()
        alert = wait_until(driver, lambda d: d.switch_to.alert)
        assert alert.text == f"Cancel training job {slow}?"
        alert.dismiss()  # not confirmed: it keeps running
        time.sleep(1)
        assert _job(stack, slow)["status"] == "running"
        driver.find_element(By.CSS_SELECTOR, f"button.cancel[data-id='{slow}']").click()
        wait_until(driver, lambda d: d.switch_to.alert).accept()
        wait_until(driver, lambda d: f"Job {slow} cancelled" in d.find_element(By.ID, "notice").text)
        cancelled = _job(stack, slow)
        assert cancelled["status"] == "cancelled" and cancelled["error"] == "cancelled by request"
        from appliance.runtime.docker_adapter import Docker

        with Docker() as d:  # its container is gone
            assert d.list_containers([f"appliance.job={slow}"]) == []

        quick = _submit(stack, dataset, "0.2")
        done = wait_for(lambda: (lambda j: j if j["status"] != "running" else None)(_job(stack, quick)), 180, 1.0)
        assert done and done["status"] == "completed" and done["registered"], done
        model = done["output_model"]
        driver.get(console + "/training")
        serve = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"button.serve[data-id='{quick}']"))
        assert serve.get_attribute("data-model") == model
        serve.click()
        wait_until(driver, lambda d: d.switch_to.alert).accept()
        done_op = "#operation[data-kind=serve][data-state=done]"
        op = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, done_op), timeout_s=300)
        assert "finished" in op.text
        served = wait_until(driver, lambda d: d.find_element(By.XPATH, f"//tr[td/code[text()='{quick}']]"))
        assert "served by" in served.text
        assert console_errors(driver) == []
    finally:
        driver.quit()
    key = json.loads(stack.cli("keys", "create", "--name", "served-from-console", "--json").stdout)["key"]
    status = _curl_status(stack.gateway + "/v1/chat/completions", key, body={
        "model": model, "messages": [{"role": "user", "content": "hours?"}]})
    assert status == "200", status
    from appliance.state.store import StateStore

    store = StateStore(Path(stack.data_dir) / "state.db")
    try:
        events = [e["message"] for e in store.events(kind="console")]
    finally:
        store.close()
    assert f"admin cancelled training job {slow}" in events and f"admin served {quick}: done" in events
