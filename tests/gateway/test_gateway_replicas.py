"""A model served by several engines (a cluster: replicas on other nodes): the real gateway
process takes turns between them, sends each its own secret, and when one refuses connections
(its node went away) the request goes to another and that engine is tried last for a while."""

from __future__ import annotations

import json

from gwtest import call, eventually, free_port, log_records

from appliance.gateway import keys as K

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def _routes(*engines: tuple[str, str]) -> dict:
    (first, first_service), rest = engines[0], engines[1:]
    return {"m1": {"upstream": first, "service": first_service,
                   "replicas": [{"upstream": u, "service": s} for u, s in rest]}}


def test_requests_take_turns_between_replicas_each_with_its_own_secret(upstream, gateway):
    a, b = upstream("engine-a"), upstream("engine-b")
    key = K.create_key("k").key
    gw = gateway(_routes((a, "llm.node1"), (b, "llm.node2")))
    (gw.dir / "upstream_keys.json").write_text(json.dumps({"format": "appliance-upstream-keys/1", "services": {
        "llm.node1": "secret-one", "llm.node2": "secret-two"}}))
    seen = []
    for _ in range(6):
        status, headers, body = call(gw.url + "/v1/chat/completions", key=key, body=CHAT)
        assert status == 200, body
        seen.append((headers["X-Upstream-Name"], headers["X-Seen-Authorization"]))
    assert seen.count(("engine-a", "Bearer secret-one")) == 3 and seen.count(("engine-b", "Bearer secret-two")) == 3


def test_a_replica_that_went_away_is_skipped_and_drained(upstream, gateway):
    live = upstream("engine-b")
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens: a node whose engine stopped
    key = K.create_key("k").key
    gw = gateway(_routes((gone, "llm.node1"), (live, "llm.node2")))
    names = []
    for _ in range(5):
        status, headers, body = call(gw.url + "/v1/chat/completions", key=key, body=CHAT)
        assert status == 200, body  # never the dead engine's 502
        names.append(headers["X-Upstream-Name"])
    assert names == ["engine-b"] * 5
    # only the first request found the engine gone; later turns tried the live one first (drained)
    def chats():  # the access log is written after each answer: wait for all five lines
        found = [r for r in log_records(gw) if r.get("path") == "/v1/chat/completions"]
        return found if len(found) >= 5 else None

    records, _ = eventually(chats)
    assert records is not None, log_records(gw)
    assert [r.get("failover") for r in records] == [1, None, None, None, None], records
    # every engine gone: the last one's error, as with one engine
    gw2 = gateway(_routes((gone, "a"), (f"http://127.0.0.1:{free_port()}", "b")))
    status, _, body = call(gw2.url + "/v1/chat/completions", key=key, body=CHAT)
    assert status == 502 and body["error"]["code"] == "upstream_unavailable"
