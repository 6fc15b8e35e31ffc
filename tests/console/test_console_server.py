"""The console's gatekeeping and its JSON, against the gateway's real sign-in routes (no Docker).

The sign-in side is the gateway's own code (``authweb`` on aiohttp, :class:`gwtest.AuthServer`),
the console is ``appliance.console.server`` served for real, and the state is a real SQLite file:
who may see which page, what a change needs (same origin, JSON, bounded), and that keys created
and revoked here are the ones ``appliance keys list`` shows.
"""

from __future__ import annotations

import json

import pytest
from consoletest import ConsoleServer
from gwtest import AuthServer, fetch, free_port, sign_in

from appliance.console.server import Console, ConsoleConfig, chart_library
from appliance.gateway import keys as K
from appliance.gateway import users as U
from appliance.paths import data_dir
from appliance.state.store import StateStore

PW = "a long console test passphrase"


@pytest.fixture
def box():
    """A state with an admin (alice) and a user (bob), the gateway's sign-in and a console."""
    U.add_user("alice", role="admin", password=PW)
    U.add_user("bob", password=PW)
    auth = AuthServer(data_dir() / "gateway")
    store = StateStore.open_default()
    server = ConsoleServer(Console(ConsoleConfig(auth_url=auth.url), store=store))
    try:
        yield {"auth": auth, "console": server, "store": store,
               "alice": sign_in(auth.url, "alice", PW), "bob": sign_in(auth.url, "bob", PW)}
    finally:
        server.stop()
        if auth.thread.is_alive():  # a test may have stopped it (the gateway gone)
            auth.stop()


def get(box, path: str, who: str | None = None, **headers):
    if who:
        headers["Cookie"] = box[who]
    return fetch(box["console"].url + path, headers=headers)


def post(box, path: str, who: str | None, body, *, content_type="application/json", origin: str | None = "own"):
    headers = {"Content-Type": content_type}
    if who:
        headers["Cookie"] = box[who]
    if origin == "own":
        headers["Origin"] = box["console"].url
    elif origin:
        headers["Origin"] = origin
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return fetch(box["console"].url + path, method="POST", data=data, headers=headers)


def test_without_a_session_pages_go_to_sign_in_and_the_api_says_401(box):
    status, headers, _ = get(box, "/models")
    assert status == 303
    location = headers["Location"]
    assert location.startswith(f"{box['auth'].url}/auth/login?next=")
    assert "%2Fmodels" in location  # back to this page after signing in
    for path in ("/api/overview", "/api/keys", "/api/keys.csv"):
        assert get(box, path)[0] == 401, path
    status, _, body = post(box, "/api/keys", None, {"name": "x"})
    assert status == 401 and json.loads(body)["reason"] == "sign_in_required"
    assert K.list_keys(include_revoked=True).keys == []


def test_a_forged_or_stale_cookie_is_no_session(box):
    assert get(box, "/api/keys", Cookie="appliance_session=v1.forged.token")[0] == 401
    status, _, _ = fetch(box["auth"].url + "/auth/logout", method="POST", headers={"Cookie": box["bob"]})
    assert status in (200, 303)
    # the console remembers a yes for at most 5 s; a new console asks again at once
    fresh = ConsoleServer(Console(ConsoleConfig(auth_url=box["auth"].url),
                                  store=box["store"]))
    try:
        assert fetch(fresh.url + "/api/keys", headers={"Cookie": box["bob"]})[0] == 401
    finally:
        fresh.stop()


def test_admin_pages_are_for_admins(box):
    for page in ("overview", "models", "training", "releases"):
        status, _, body = get(box, f"/api/{page}", "alice")
        assert status == 200, (page, body[:300])
        assert json.loads(body)["page"] == page
        status, _, body = get(box, f"/api/{page}", "bob")
        assert status == 403, page
        path = "/" if page == "overview" else f"/{page}"
        status, _, body = get(box, path, "bob")
        assert status == 403 and b"administrators" in body
    status, _, body = get(box, "/", "alice")
    assert status == 200 and b'id="overall"' in body and b"not_installed" in body  # nothing installed here
    assert b'id="nav-releases"' in body
    status, _, body = get(box, "/keys", "bob")
    assert status == 200 and b'id="nav-releases"' not in body  # a user's menu has only their keys


def test_charts_cover_the_window_asked_for(box):
    assert json.loads(get(box, "/api/overview?window=day", "alice")[2])["window_s"] == 86400
    assert json.loads(get(box, "/api/keys?window=week", "bob")[2])["window_s"] == 7 * 86400
    status, _, body = get(box, "/api/overview?window=year", "alice")
    assert status == 400 and json.loads(body)["error"].startswith("window: unknown window 'year'")


def test_the_overview_is_the_status_report(box):
    from appliance.status.collect import collect_status

    status, _, body = get(box, "/api/overview", "alice")
    view = json.loads(body)
    report = collect_status(store=box["store"]).model_dump()
    for field in ("status", "summary", "instance", "problems", "services", "format"):
        assert view["status"][field] == report[field], field


def test_keys_created_in_the_console_are_the_box_keys_and_a_user_sees_only_theirs(box):
    K.create_key("ops-batch")  # an admin's key, made with the CLI's library function
    status, _, body = post(box, "/api/keys", "bob", {"name": "bob-laptop", "models": "demo-chat", "rpm": "30"})
    assert status == 201, body
    created = json.loads(body)
    assert created["key"].startswith(K.KEY_PREFIX) and created["models"] == ["demo-chat"] and created["rpm"] == 30
    assert K.verify_key(created["key"]).owner == "bob"
    bob = json.loads(get(box, "/api/keys", "bob")[2])
    assert [k["name"] for k in bob["keys"]] == ["bob-laptop"] and "users" not in bob
    alice = json.loads(get(box, "/api/keys", "alice")[2])
    assert sorted(k["name"] for k in alice["keys"]) == ["bob-laptop", "ops-batch"]
    assert {u["name"] for u in alice["users"]} == {"alice", "bob"}
    assert all("hash" not in k and "salt" not in k and "key" not in k for k in alice["keys"])  # no secret again
    # bad input: one clear error, nothing created
    status, _, body = post(box, "/api/keys", "bob", {"name": "bad name!"})
    assert status == 400 and "name" in json.loads(body)["error"]
    status, _, body = post(box, "/api/keys", "bob", {"name": "ok-name", "rpm": "many"})
    assert status == 400 and "rpm" in json.loads(body)["error"]
    assert sorted(k.name for k in K.list_keys().keys) == ["bob-laptop", "ops-batch"]


def test_revoke_is_recorded_with_the_user_and_users_revoke_only_their_own(box):
    K.create_key("ops-batch")
    mine = json.loads(post(box, "/api/keys", "bob", {"name": "bob-key"})[2])
    status, _, body = post(box, "/api/keys/ops-batch/revoke", "bob", {})
    assert status == 403
    assert K.verify_key(mine["key"]) is not None
    status, _, body = post(box, "/api/keys/bob-key/revoke", "bob", {})
    assert status == 200 and json.loads(body)["status"] == "revoked"
    assert K.verify_key(mine["key"]) is None
    events = [e["message"] for e in box["store"].events(kind="console")]
    assert "bob revoked API key 'bob-key'" in events and "bob created API key 'bob-key'" in events
    status, _, body = post(box, "/api/keys/ops-batch/revoke", "alice", {})
    assert status == 200
    assert K.list_keys().keys == []


def test_changes_must_come_from_the_console_itself_as_bounded_json(box):
    for origin in ("http://evil.example", f"http://127.0.0.1:{free_port()}"):
        status, _, body = post(box, "/api/keys", "alice", {"name": "planted"}, origin=origin)
        assert status == 403 and json.loads(body)["reason"] == "cross_origin", origin
    status, _, _ = post(box, "/api/keys", "alice", b'{"name": "planted"}', content_type="text/plain")
    assert status == 415
    status, _, _ = post(box, "/api/keys", "alice", b'{"name": "' + b"x" * 20000 + b'"}')
    assert status == 413
    status, _, _ = post(box, "/api/keys", "alice", b"[" * 5000 + b"]" * 5000)
    assert status == 400
    # no Origin: only a non-browser client (no Sec-Fetch-Site) or a same-origin fetch
    headers = {"Content-Type": "application/json", "Cookie": box["alice"], "Sec-Fetch-Site": "cross-site"}
    status, _, _ = fetch(box["console"].url + "/api/keys", method="POST", data=b'{"name": "planted"}', headers=headers)
    assert status == 403
    assert K.list_keys(include_revoked=True).keys == []


def test_csv_export_counts_what_keys_list_counts(box):
    K.create_key("ops-batch")
    (data_dir() / "gateway" / "usage.json").write_text(json.dumps({"keys": {
        K.list_keys().keys[0].key_id: {"requests": 7, "prompt_tokens": 11, "completion_tokens": 13}}}))
    status, headers, body = get(box, "/api/keys.csv", "alice")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = body.decode().splitlines()
    assert lines[0].startswith("name,key_id,owner,status,requests")
    assert lines[1].split(",")[:7] == ["ops-batch", K.list_keys().keys[0].key_id, "admin", "active", "7", "11", "13"]


def test_the_sign_in_check_failing_closes_the_console(box):
    box["auth"].stop()
    status, _, body = get(box, "/api/keys", "alice")
    assert status == 503 and json.loads(body)["reason"] == "auth_unavailable"


def test_assets_are_served_by_the_box_with_a_strict_policy(box):
    assert chart_library() is not None, "plotly (a dependency) ships plotly.min.js"
    status, headers, body = get(box, "/static/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and b"plotly" in body[:2000].lower()
    status, headers, body = get(box, "/static/console.js")
    assert status == 200 and b"drawCharts" in body
    assert get(box, "/static/../server.py")[0] == 404
    status, headers, _ = get(box, "/keys", "alice")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"


def test_the_training_page_shows_a_jobs_loss_curve_and_log_tail(box, tmp_path):
    """A finished job (as the supervision records it), its loss points as the agent recorded them."""
    import time

    from appliance.agent.history import History, job_samples
    from appliance.runtime import labels as L
    from appliance.train import store as S
    from appliance.train.dataset import DatasetSummary
    from appliance.train.models import Job, Progress

    job_dir = tmp_path / "job-0001" / "work"
    job_dir.mkdir(parents=True)
    (job_dir.parent / "job.log").write_text("".join(f"step {i} loss {2.0 - i / 10:.2f}\n" for i in range(30)))
    job = Job(id="job-0001", instance=L.instance(), status="completed", model="qwen2.5-7b-instruct", method="lora",
              recipe="lora-cuda", backend="cuda", image="img",
              dataset=DatasetSummary(path="/d", format="chat", records=1, words=1, size_bytes=1, sha256="0" * 64),
              job_dir=str(job_dir), output_dir=str(tmp_path / "out"), output_model="qwen-ft", created_ts=time.time(),
              progress=Progress(step=29, total_steps=30, loss=0.9), registered=True)
    S.save(S.open_store(box["store"]), job)
    now = time.time()
    history = History(box["store"])
    for i, loss in enumerate((1.8, 1.2, 0.9)):
        job.progress.loss = loss
        history.record(job_samples([job]), ts=now - 60 + i * 15)
    status, _, body = get(box, "/api/training", "alice")
    assert status == 200, body
    [shown] = json.loads(body)["jobs"]
    assert [p[1] for p in shown["loss_history"]] == [1.8, 1.2, 0.9]
    assert shown["log_tail"].splitlines()[-1] == "step 29 loss -0.90" and len(shown["log_tail"].splitlines()) == 20
    status, _, page = get(box, "/training", "alice")
    assert b'id="chart-loss-job-0001"' in page and b"appliance serve job-0001" in page and b"97 %" in page
    assert b'<button class="serve" data-id="job-0001" data-model="qwen-ft">' in page  # finished: a Serve button
    assert shown["servable"] is True and shown["served_by"] is None


def test_serving_a_job_from_the_console_is_confirmed_checked_first_and_reports_its_outcome(box, tmp_path):
    """Refusals before anything starts (role, origin, confirmation, a job that is not finished),
    then a real start whose failure (the job's model is not in this box's catalog) is shown with
    the CLI's words and recorded as an event."""
    import time

    from appliance.runtime import labels as L
    from appliance.train import store as S
    from appliance.train.dataset import DatasetSummary
    from appliance.train.models import Job

    ds = DatasetSummary(path="/d", format="chat", records=1, words=1, size_bytes=1, sha256="0" * 64)
    for jid, status, registered in (("job-0002", "running", False), ("job-0003", "completed", True)):
        S.save(S.open_store(box["store"]), Job(
            id=jid, instance=L.instance(), status=status, model="qwen2.5-7b-instruct", method="lora",
            recipe="lora-cuda", backend="cuda", image="img", dataset=ds, job_dir=str(tmp_path / jid),
            output_dir=str(tmp_path / "out"), output_model=f"qwen-ft-{jid}", created_ts=time.time(),
            registered=registered))
    assert post(box, "/api/jobs/job-0003/serve", "bob", {"confirm": True})[0] == 403
    assert post(box, "/api/jobs/job-0003/serve", "alice", {"confirm": True}, origin="http://evil.example")[0] == 403
    status, _, body = post(box, "/api/jobs/job-0003/serve", "alice", {})
    assert status == 400 and "confirm" in json.loads(body)["error"]
    status, _, body = post(box, "/api/jobs/job-0002/serve", "alice", {"confirm": True})
    assert status == 400 and "job-0002 is running and has no registered output" in json.loads(body)["error"]
    status, _, body = post(box, "/api/jobs/job-9999/serve", "alice", {"confirm": True})
    assert status == 400 and "no training job 'job-9999'" in json.loads(body)["error"]
    assert box["console"].console.operations.snapshot() is None  # nothing started

    status, _, body = post(box, "/api/jobs/job-0003/serve", "alice", {"confirm": True})
    assert status == 202 and json.loads(body)["kind"] == "serve"
    box["console"].console.operations.wait(60)
    view = json.loads(get(box, "/api/training", "alice")[2])
    op = view["operation"]
    assert op["state"] == "failed" and op["subject"] == "job-0003" and op["user"] == "alice"
    assert "qwen-ft-job-0003 of job job-0003 is no longer in the catalog" in op["error"]
    page = get(box, "/training", "alice")[2]
    assert b'data-kind="serve" data-state="failed"' in page
    events = _console_events_once(box, "alice served job-0003: failed")
    assert "alice started serving job job-0003" in events
    assert any(m.startswith("alice served job-0003: failed") for m in events)


def test_one_operation_at_a_time():
    """A second long change while one runs is refused (the page answers 409)."""
    import threading

    from appliance.console.operations import Busy, Operations

    ops, release, events = Operations(), threading.Event(), []

    def slow(say):
        say("working")
        release.wait(10)
        return {"ok": True}

    first = ops._start("serve", "alice", slow, lambda m, d: events.append(m), subject="job-1")
    assert first["state"] == "running"
    with pytest.raises(Busy, match="a serve started by alice is still running"):
        ops.start_rollback("bob", record_event=lambda m, d: None)
    release.set()
    ops.wait(10)
    done = ops.snapshot()
    assert done["state"] == "done" and done["result"] == {"ok": True} and done["lines"][0].endswith(" working")
    assert events == ["alice served job-1: done"]


def test_cancelling_a_job_is_for_admins_from_the_console_itself(box):
    status, _, _ = post(box, "/api/jobs/job-0001/cancel", "bob", {})
    assert status == 403
    status, _, body = post(box, "/api/jobs/job-0001/cancel", "alice", {}, origin="http://evil.example")
    assert status == 403 and json.loads(body)["reason"] == "cross_origin"


def _console_events_once(box, prefix: str, timeout_s: float = 10.0) -> list[str]:
    """The console events, once one starting with ``prefix`` is recorded (an operation's thread
    records its outcome after the page shows it)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        events = [e["message"] for e in box["store"].events(kind="console")]
        if any(m.startswith(prefix) for m in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_a_rollback_must_be_confirmed_is_for_admins_and_reports_its_outcome(box):

    view = json.loads(get(box, "/api/releases", "alice")[2])
    assert "no previous release" in view["rollback"]["unavailable"]  # nothing installed: rollback_target's words
    assert post(box, "/api/releases/rollback", "bob", {"confirm": True})[0] == 403
    status, _, body = post(box, "/api/releases/rollback", "alice", {})
    assert status == 400 and "confirm" in json.loads(body)["error"]
    status, _, body = post(box, "/api/releases/rollback", "alice", {"confirm": True})
    assert status == 202 and json.loads(body)["state"] == "running"
    box["console"].console.operations.wait(60)
    op = json.loads(get(box, "/api/releases", "alice")[2])["operation"]
    assert op["state"] == "failed" and "no previous release" in op["error"] and op["user"] == "alice"
    events = _console_events_once(box, "alice rolled back: failed")
    assert "alice started a rollback" in events and any(m.startswith("alice rolled back: failed") for m in events)


def test_the_models_page_counts_and_charts_per_served_model(box):
    import time

    from appliance.agent.history import History, model_samples
    from appliance.gateway.keys import read_model_usage

    today = time.strftime("%Y-%m-%d", time.gmtime())
    usage_file = data_dir() / "gateway" / "usage.json"
    history, now = History(box["store"]), time.time()
    for i, requests in enumerate((10, 40)):
        usage_file.write_text(json.dumps({"keys": {}, "models": {"demo-chat": {
            "requests": requests, "prompt_tokens": 2 * requests, "completion_tokens": 3 * requests, "day": today,
            "day_requests": requests, "day_tokens": 5 * requests}}}))
        history.record(model_samples(read_model_usage()), ts=now - 30 + 15 * i)
    view = json.loads(get(box, "/api/models", "alice")[2])
    assert view["usage"]["demo-chat"]["requests_today"] == 40
    assert [p[1] for p in view["history"]["gw.model.demo-chat.requests"]] == [10.0, 40.0]
    page = get(box, "/models", "alice")[2].decode()
    assert 'id="model-usage"' in page and "<td>demo-chat</td><td>40</td><td>80</td><td>120</td>" in page
    assert "<li>demo-chat: 2.0</li>" in page  # (40 - 10) requests in 15 s, the rate chart's last value


def test_the_models_page_shows_each_models_planned_memory(box):
    """A recorded release of the real H200 plan (no container needed: Docker is unreachable here)."""
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from appliance.runtime import labels as L
    from appliance.runtime import releases
    from appliance.runtime.compose import compose
    from tests.support import H200

    plan = make_plan(detect(snapshot=str(H200), usage=False), load_catalog())
    stack = compose(plan, catalog=load_catalog(), instance=L.instance()).with_hashes()
    store = releases.open_store(box["store"])
    releases.commit(store, L.instance(), releases.begin(store, L.instance(), plan, stack, source="test"))
    view = json.loads(get(box, "/api/models", "alice")[2])
    planned = {ps.name: ps.memory_mib_per_device for ps in plan.services}
    assert view["served"] and all(m["memory_mib_per_device"] == planned[m["service"]] for m in view["served"])
    assert any(m["memory_mib_per_device"] for m in view["served"])
    page = get(box, "/models", "alice")[2].decode()
    big = max(view["served"], key=lambda m: m["memory_mib_per_device"] or 0)
    assert f"{big['memory_mib_per_device'] / 1024:.1f} GiB" in page


def test_usage_per_day_as_csv_per_key_user_and_model_and_a_user_gets_only_their_own(box):
    import time

    from appliance.agent.history import History

    alice_key = K.create_key("alice-key")
    bob_key = json.loads(post(box, "/api/keys", "bob", {"name": "bob-key"})[2])
    history = History(box["store"])
    day0 = (int(time.time() // 86400) - 2) * 86400.0  # two UTC days ago, at midnight
    points = [(day0 + 3600, 0), (day0 + 7200, 5), (day0 + 86400 + 3600, 9), (day0 + 86400 + 7200, 2)]  # reset
    for ts, v in points:
        history.record({f"gw.key.{alice_key.key_id}.requests": v, f"gw.key.{bob_key['key_id']}.requests": 2 * v,
                        f"gw.key.{bob_key['key_id']}.tokens": 10 * v, "gw.user.bob.requests": v,
                        "gw.user.carol.requests": v, "gw.model.demo-chat.requests": 3 * v}, ts=ts)
    d0, d1 = (time.strftime("%Y-%m-%d", time.gmtime(day0 + s)) for s in (0, 86400))
    status, headers, body = get(box, "/api/usage-daily.csv", "alice")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = body.decode().splitlines()
    assert rows[0] == "day,kind,name,requests,tokens"
    # day 0: +5; day 1: +4 from the last point of day 0, then a reset to 2 counts as +2
    assert f"{d0},key,alice-key,5,0" in rows and f"{d1},key,alice-key,6,0" in rows
    assert f"{d0},key,bob-key,10,50" in rows and f"{d0},model,demo-chat,15,0" in rows
    assert f"{d0},user,carol,5,0" in rows
    bob_rows = get(box, "/api/usage-daily.csv", "bob")[2].decode().splitlines()
    assert f"{d0},key,bob-key,10,50" in bob_rows and f"{d0},user,bob,5,0" in bob_rows
    assert not any("alice-key" in r or "carol" in r or ",model," in r for r in bob_rows)
    assert "gw.user.carol.requests" not in json.loads(get(box, "/api/keys?window=week", "bob")[2])["history"]
