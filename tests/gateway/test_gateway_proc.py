"""The gateway as a real process in front of real HTTP engines: auth, scopes, limits, proxying."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from gwtest import DEMO_ENGINE, call, eventually, free_port, log_records, raw_exchange, wait_http

from appliance.gateway import keys as K
from tests.support import poll, wait_until

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "SECRET-PROMPT-TEXT please"}]}


def test_auth_scope_routing_and_no_key_forwarded(upstream, gateway):
    u1, u2 = upstream("m1"), upstream("m2")
    full = K.create_key("full").key
    scoped = K.create_key("scoped", models=["m2"]).key
    gw = gateway({"m1": u1 + "/v1", "m2": u2})
    assert call(gw.url + "/v1/models")[0] == 401
    assert call(gw.url + "/v1/models", key="apk_000000000000_" + "x" * 43)[0] == 401
    assert call(gw.url + "/v1/models", key="not-a-key")[0] == 401
    assert call(gw.url + "/v1/models", headers={"Authorization": "Basic Zm9vOmJhcg=="})[0] == 401
    status, hdrs, body = call(gw.url + "/v1/chat/completions", body=CHAT)
    assert status == 401 and body["error"]["code"] == "missing_api_key" and "WWW-Authenticate" in hdrs

    status, _, body = call(gw.url + "/v1/models", key=full)
    assert status == 200 and [m["id"] for m in body["data"]] == ["m1", "m2"]
    status, _, body = call(gw.url + "/v1/models", key=scoped)
    assert [m["id"] for m in body["data"]] == ["m2"]
    assert call(gw.url + "/v1/models/m1", key=scoped)[0] == 403
    assert call(gw.url + "/v1/models/m2", key=scoped)[0] == 200
    # x-api-key works too
    assert call(gw.url + "/v1/models", headers={"X-Api-Key": full})[0] == 200

    status, hdrs, body = call(gw.url + "/v1/chat/completions", key=full, body=CHAT)
    assert status == 200 and body["choices"][0]["message"]["content"].startswith("echo from m1")
    assert hdrs["X-Seen-Authorization"] == "-"  # the caller's key never reaches the engine
    status, _, body = call(gw.url + "/v1/chat/completions", key=full, body={**CHAT, "model": "m2"})
    assert "echo from m2" in body["choices"][0]["message"]["content"]
    status, _, body = call(gw.url + "/v1/chat/completions", key=scoped, body=CHAT)
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert call(gw.url + "/v1/chat/completions", key=scoped, body={**CHAT, "model": "m2"})[0] == 200
    # unknown model, missing model, bad JSON, unknown path
    assert call(gw.url + "/v1/chat/completions", key=full, body={**CHAT, "model": "nope"})[0] == 404
    assert call(gw.url + "/v1/chat/completions", key=full, body={"messages": []})[0] == 400
    req = urllib_post(gw.url + "/v1/chat/completions", b"{not json", full)
    assert req[0] == 400
    assert call(gw.url + "/v1/files", key=full, body={"model": "m1"})[0] == 404
    # other OpenAI endpoints
    status, _, body = call(gw.url + "/v1/completions", key=full, body={"model": "m1", "prompt": "hi"})
    assert status == 200 and "echo from m1" in body["choices"][0]["text"]
    status, _, body = call(gw.url + "/v1/embeddings", key=full, body={"model": "m1", "input": ["a b", "c"]})
    assert status == 200 and len(body["data"]) == 2
    status, _, body = call(gw.url + "/v1/rerank", key=full,
                           body={"model": "m1", "query": "cat", "documents": ["dog", "cat"]})
    assert status == 200 and body["results"][1]["relevance_score"] > body["results"][0]["relevance_score"]

    def flushed():  # the gateway writes its usage counters every 2 s: wait for the flush with all of them
        usage = {k.name: k.usage for k in K.list_keys().keys}
        return usage if usage["full"].requests >= 5 and usage["scoped"].denied >= 1 else None

    usage = wait_until(flushed, what="the gateway's usage flush (5 requests of 'full', 1 denial of 'scoped')")
    # chat m1, chat m2, completions, embeddings, rerank
    assert usage["full"].requests == 5 and usage["full"].completion_tokens > 0
    assert usage["scoped"].denied == 1
    # per served model too (what the console's models page charts); refused requests count nowhere
    models = K.read_model_usage()
    assert (models["m1"].requests, models["m2"].requests) == (4, 2) and "nope" not in models
    assert models["m1"].completion_tokens > 0 and models["m1"].requests_today == 4 and models["m1"].tokens_today > 0

    def chat_lines():
        lines = [json.loads(line) for line in gw.proc.output().splitlines() if line.startswith("{")]
        return [r for r in lines if r.get("path") == "/v1/chat/completions" and r.get("status") == 200]

    ok = wait_until(chat_lines, what="the gateway's log line of a successful chat request")
    assert ok[0]["key"] == "full" and ok[0]["model"] == "m1" and ok[0]["prompt_tokens"] > 0
    logs = gw.proc.output()
    assert full not in logs and scoped not in logs and "SECRET-PROMPT-TEXT" not in logs


def urllib_post(url: str, raw: bytes, key: str):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.request("POST", u.path, body=raw, headers={"Authorization": f"Bearer {key}",
                                                    "Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_revocation_and_new_keys_take_effect_within_seconds(upstream, gateway):
    u1 = upstream("m1")
    key = K.create_key("soon-revoked").key
    gw = gateway({"m1": u1})  # default 1 s poll, as in the stack
    assert call(gw.url + "/v1/models", key=key)[0] == 200
    subprocess.run([sys.executable, "-m", "appliance", "keys", "revoke", "soon-revoked"], check=True,
                   capture_output=True)
    t0 = time.monotonic()
    status, waited = eventually(lambda: call(gw.url + "/v1/models", key=key)[0] == 401, timeout_s=10)
    assert status, "revoked key still accepted after 10 s"
    assert time.monotonic() - t0 < 5
    new = K.create_key("fresh").key
    assert eventually(lambda: call(gw.url + "/v1/models", key=new)[0] == 200, timeout_s=10)[0]
    assert gw.proc.p.poll() is None  # no restart


def test_expired_key_is_401(upstream, gateway):
    u1 = upstream("m1")
    key = K.create_key("short", expires="2s").key
    gw = gateway({"m1": u1})
    assert call(gw.url + "/v1/models", key=key)[0] == 200
    status, _, body = wait_until(lambda: (lambda r: r if r[0] != 200 else None)(call(gw.url + "/v1/models", key=key)),
                                 what="the gateway to refuse a key 2 s after its creation", timeout_s=10)
    assert status == 401 and body["error"]["code"] == "expired_api_key"


def test_rate_and_token_quotas_are_429(upstream, gateway):
    u1 = upstream("m1")
    rpm = K.create_key("rpm", rpm=3).key
    tok = K.create_key("tok", tokens_per_day=12).key
    other = K.create_key("other").key
    gw = gateway({"m1": u1})
    for _ in range(3):
        assert call(gw.url + "/v1/chat/completions", key=rpm, body=CHAT)[0] == 200
    status, hdrs, body = call(gw.url + "/v1/chat/completions", key=rpm, body=CHAT)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded" and int(hdrs["Retry-After"]) >= 1
    assert call(gw.url + "/v1/chat/completions", key=other, body=CHAT)[0] == 200  # per key
    # token quota: the first request (2 prompt + ~7 completion tokens) fits, the second crosses, third refused
    assert call(gw.url + "/v1/chat/completions", key=tok, body=CHAT)[0] == 200
    assert call(gw.url + "/v1/chat/completions", key=tok, body=CHAT)[0] == 200
    status, _, body = call(gw.url + "/v1/chat/completions", key=tok, body=CHAT)
    assert status == 429 and body["error"]["code"] == "token_quota_exceeded"
    # streamed tokens count too (usage chunk or one per content chunk)
    tok2 = K.create_key("tok2", tokens_per_day=4).key
    eventually(lambda: call(gw.url + "/v1/models", key=tok2)[0] == 200)
    status, _, raw = call(gw.url + "/v1/chat/completions", key=tok2, body={**CHAT, "stream": True})
    assert status == 200 and b"[DONE]" in raw
    assert call(gw.url + "/v1/chat/completions", key=tok2, body=CHAT)[0] == 429


def test_streaming_is_passed_through_as_it_arrives(upstream, gateway):
    u1 = upstream("m1")
    key = K.create_key("s").key
    gw = gateway({"m1": u1})
    u = urlsplit(gw.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    body = json.dumps({**CHAT, "stream": True, "delay_s": 0.3, "stream_options": {"include_usage": True}})
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    first = resp.read1(65536)
    first_at = time.monotonic() - t0
    rest = resp.read()
    total = time.monotonic() - t0
    assert first.startswith(b"data: ") and b"[DONE]" in rest
    # the engine takes >= 7 x 0.3 s; the first chunk must arrive long before the end
    assert total > 1.5 and first_at < total - 1.0
    # keep-alive: the same client connection serves the next request
    conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert conn.getresponse().status == 200


def test_upstream_restart_and_outage(upstream, gateway):
    port = free_port()
    u1 = upstream("m1", port=port)
    key = K.create_key("k").key
    gw = gateway({"m1": u1, "gone": f"http://127.0.0.1:{free_port()}"})
    assert call(gw.url + "/v1/chat/completions", key=key, body=CHAT)[0] == 200  # pools a connection
    upstream.by_port[port].stop()
    upstream("m1", port=port)  # a new engine process on the same port: the pooled connection is stale
    status, _, body = call(gw.url + "/v1/chat/completions", key=key, body=CHAT)
    assert status == 200, body
    status, _, body = call(gw.url + "/v1/chat/completions", key=key, body={**CHAT, "model": "gone"})
    assert status == 502 and body["error"]["code"] == "upstream_unavailable"


def test_routes_reload_and_bad_keys_file_fails_closed(upstream, gateway):
    u1, u2 = upstream("m1"), upstream("m2")
    key = K.create_key("k").key
    gw = gateway({"m1": u1})
    assert call(gw.url + "/v1/chat/completions", key=key, body={**CHAT, "model": "m2"})[0] == 404
    (gw.dir / "routes.json").write_text(json.dumps({"models": {"m1": u1, "m2": {"upstream": u2}}}))
    assert eventually(lambda: call(gw.url + "/v1/chat/completions", key=key,
                                   body={**CHAT, "model": "m2"})[0] == 200)[0]
    (gw.dir / "keys.json").write_text("{corrupt")
    assert eventually(lambda: call(gw.url + "/v1/models", key=key)[0] == 401)[0]
    assert call(gw.url + "/healthz")[0] == 503
    K.export_keys_file()
    assert eventually(lambda: call(gw.url + "/v1/models", key=key)[0] == 200)[0]
    assert call(gw.url + "/healthz")[0] == 200


def test_usage_survives_gateway_restart(upstream, gateway):
    u1 = upstream("m1")
    created = K.create_key("budget", tokens_per_day=10)
    gw = gateway({"m1": u1})
    assert call(gw.url + "/v1/chat/completions", key=created.key, body=CHAT)[0] == 200
    assert call(gw.url + "/v1/chat/completions", key=created.key, body=CHAT)[0] == 200
    gw.proc.stop()  # SIGTERM flushes usage
    assert K.list_keys().keys[0].usage.tokens_today >= 10
    gw2 = gateway({"m1": u1})
    assert call(gw2.url + "/v1/chat/completions", key=created.key, body=CHAT)[0] == 429


def test_demo_engine_through_gateway(procs, gateway, tmp_path):
    port = free_port()
    procs([sys.executable, "-S", str(DEMO_ENGINE)],
          {"PORT": str(port), "SERVED_MODEL_NAME": "demo-chat"}, tmp_path / "demo.log")
    wait_http(f"http://127.0.0.1:{port}/health")
    key = K.create_key("d").key
    gw = gateway({"demo-chat": f"http://127.0.0.1:{port}"})
    status, _, body = call(gw.url + "/v1/chat/completions", key=key,
                           body={"model": "demo-chat", "messages": [{"role": "user", "content": "ping"}]})
    assert status == 200 and "ping" in body["choices"][0]["message"]["content"]
    status, _, raw = call(gw.url + "/v1/chat/completions", key=key,
                          body={"model": "demo-chat", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert status == 200 and raw.count(b"data: ") >= 3 and b"[DONE]" in raw


def test_http10_client_gets_a_plain_stream(upstream, gateway):
    import socket

    u1 = upstream("m1")
    key = K.create_key("old-client").key
    gw = gateway({"m1": u1})
    body = json.dumps({**CHAT, "stream": True}).encode()
    u = urlsplit(gw.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer " + key.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\n\r\n" + body)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")) and b"Transfer-Encoding" not in head
    assert payload.startswith(b"data: ") and payload.rstrip().endswith(b"data: [DONE]")


# ---- the edge: bounded reads, timeouts, disconnects ------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw(gw, *parts: bytes) -> bytes:
    u = urlsplit(gw.url)
    return raw_exchange(u.hostname, u.port, *parts)


def test_chunked_bodies_are_bounded_negative_sizes_refused_and_memory_stays_flat(upstream, gateway):
    key = K.create_key("c").key
    gw = gateway({"m1": upstream("m1")}, env={"GATEWAY_MAX_BODY_MIB": "1", "GATEWAY_CLIENT_TIMEOUT_S": "2"})
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    # a chunk that announces more than the limit and then stalls: the body timeout, not a wait for 4.5 GiB
    t0 = time.monotonic()
    answer = _raw(gw, head + b"123456789\r\n" + b"x" * 64)
    assert answer[:12] in (b"HTTP/1.1 408", b"HTTP/1.0 408") and time.monotonic() - t0 < 8, answer[:300]
    for bad in (b"-1\r\n", b"+10\r\n", b"zz\r\n", b"\r\n"):
        answer = _raw(gw, head + bad + b"x" * 64)                 # one packet: refused by the HTTP parser
        assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), answer[:300]
        answer = _raw(gw, head, bad + b"x" * 64)          # the body after the head: by the gateway
        assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400") and b'"code":"bad_request"' in answer, answer[:300]
    before = _rss_kib(gw.proc.p.pid)
    u = urlsplit(gw.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(head)
        piece = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"          # 1 MiB chunks, 64 of them offered
        try:
            for _ in range(64):
                s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass                                                   # refused and closed mid-body
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert _rss_kib(gw.proc.p.pid) - before < 16 * 1024            # bounded by the 1 MiB limit, not 64 MiB
    assert call(gw.url + "/v1/chat/completions", key=key, body=CHAT)[0] == 200


def test_a_thousand_half_sent_requests_do_not_lock_clients_out(upstream, gateway):
    key = K.create_key("h").key
    gw = gateway({"m1": upstream("m1")}, env={"GATEWAY_CLIENT_TIMEOUT_S": "3"})
    u = urlsplit(gw.url)
    held = []
    try:
        for _ in range(1000):
            s = socket.create_connection((u.hostname, u.port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")   # and never more
            held.append(s)
        status, _, body = call(gw.url + "/v1/chat/completions", key=key, body=CHAT, timeout_s=5)
        assert status == 200, body
        # each half-sent request is dropped by the gateway after its client timeout
        deadline = time.monotonic() + 30
        open_ = list(held)
        while open_ and time.monotonic() < deadline:
            still = []
            for s in open_:
                s.settimeout(0.05)
                try:
                    if s.recv(1024) == b"":
                        continue
                except (TimeoutError, BlockingIOError):
                    still.append(s)
                    continue
                except OSError:
                    continue
            open_ = still
        assert not open_, f"{len(open_)} half-sent connections were still open after 30 s"
    finally:
        for s in held:
            s.close()


def test_an_engine_that_does_not_answer_is_504_upstream_timeout_naming_the_model(upstream, gateway):
    key = K.create_key("t").key
    gw = gateway({"m1": upstream("m1"), "nowhere": "http://192.0.2.1:9"},
                 env={"GATEWAY_UPSTREAM_TIMEOUT_S": "1", "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S": "1"})
    status, headers, body = call(gw.url + "/v1/chat/completions", key=key,
                                 body={**CHAT, "first_byte_delay_s": 3}, timeout_s=20)
    assert status == 504 and body["error"]["code"] == "upstream_timeout", body
    assert "'m1' did not answer within 1 s" in body["error"]["message"] and headers.get("Retry-After")


def test_a_stalled_stream_ends_unterminated_and_is_logged(upstream, gateway):
    key = K.create_key("i").key
    gw = gateway({"m1": upstream("m1")}, env={"GATEWAY_UPSTREAM_IDLE_TIMEOUT_S": "0.5"})
    u = urlsplit(gw.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({**CHAT, "stream": True, "delay_s": 2}),
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()                                  # no terminating chunk: the client knows it is cut short
    assert poll(lambda: any(r.get("error") == "upstream_idle_timeout" for r in log_records(gw)), 10)[0]


def test_a_client_that_leaves_mid_stream_is_logged_499_and_charged_what_was_generated(upstream, gateway):
    key = K.create_key("d").key
    gw = gateway({"m1": upstream("m1")})
    u = urlsplit(gw.url)
    body = json.dumps({**CHAT, "stream": True, "delay_s": 0.5})
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
              + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
              + b"\r\n\r\n" + body.encode())
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.close()                                        # gone after the first piece
    rec = poll(lambda: next((r for r in log_records(gw) if r.get("key") == "d" and "status" in r), None), 15)[0]
    assert rec and rec["status"] == 499 and rec["error"] == "client_disconnected", rec
    full = call(gw.url + "/v1/chat/completions", key=key, body=CHAT)[2]["usage"]["completion_tokens"]
    assert rec["completion_tokens"] < full                     # only what was generated is charged


def _closed_by_peer(s: socket.socket, timeout_s: float = 0.05) -> bool:
    s.settimeout(timeout_s)
    try:
        return s.recv(1024) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_at_the_connection_cap_the_oldest_idle_connection_is_shed_never_a_busy_one(upstream, gateway):
    """At the cap a newcomer is served and the oldest connection that never completed a request
    is closed (half-sent requests cannot lock clients out); when every connection has a request in
    flight, the newcomer is the one closed, and both are counted in the log."""
    import threading

    key = K.create_key("m").key
    gw = gateway({"m1": upstream("m1")}, env={"GATEWAY_MAX_CONNECTIONS": "20", "GATEWAY_CLIENT_TIMEOUT_S": "20"})
    u = urlsplit(gw.url)
    held = [socket.create_connection((u.hostname, u.port), timeout=5) for _ in range(20)]
    try:
        for s in held:
            s.sendall(b"GET /v1/models HTTP/1.1\r\n")          # half a request each: the cap is reached
        time.sleep(0.3)
        status, _, _ = call(gw.url + "/healthz", timeout_s=5)   # the 21st is answered...
        assert status == 200
        assert poll(lambda: _closed_by_peer(held[0]), 5)[0]    # ...and the oldest half-sent one was closed
        assert not any(_closed_by_peer(s) for s in held[2:])
        assert poll(lambda: any(r.get("event") == "connection_shed" for r in log_records(gw)), 5)[0]
    finally:
        for s in held:
            s.close()

    # 20 requests in flight (slow streams): a 21st connection is closed unanswered, none of theirs
    time.sleep(0.5)
    results: list[int] = []
    body = {**CHAT, "stream": True, "delay_s": 0.5}
    threads = [threading.Thread(target=lambda: results.append(call(gw.url + "/v1/chat/completions", key=key,
                                                                   body=body, timeout_s=30)[0]))
               for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(1.0)                      # every stream has started (each lasts 2.5 s); no probe: it would count
    extra = socket.create_connection((u.hostname, u.port), timeout=5)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert extra.recv(1024) == b""                           # closed unanswered
    except ConnectionResetError:
        pass
    extra.close()
    for t in threads:
        t.join(30)
    assert results == [200] * 20                                 # no request in progress was cut
    assert poll(lambda: any(r.get("event") == "connections_full" for r in log_records(gw)), 5)[0]


def test_a_queued_request_is_served_when_its_turn_comes_and_a_full_queue_is_503(upstream, gateway):
    """One request in flight per engine: the next one waits its turn (and is answered, not taken
    for a client that left); with a short queue deadline, a request that cannot get a turn is 503."""
    import threading

    key = K.create_key("q").key
    gw = gateway({"m1": upstream("m1")}, env={"GATEWAY_UPSTREAM_CONCURRENCY": "1"})
    slow = threading.Thread(target=call, args=(gw.url + "/v1/chat/completions",),
                            kwargs={"key": key, "body": {**CHAT, "stream": True, "delay_s": 0.4}, "timeout_s": 30})
    slow.start()
    time.sleep(0.3)                                   # the slow stream holds the engine's one slot
    status, _, body = call(gw.url + "/v1/chat/completions", key=key, body=CHAT, timeout_s=30)
    slow.join(30)
    assert status == 200, body
    queued = poll(lambda: [r for r in log_records(gw) if r.get("queued_ms") and r.get("stream") is False], 5)[0]
    assert queued and queued[0]["status"] == 200 and queued[0]["queued_ms"] > 500

    gw2 = gateway({"m1": upstream("m2")}, env={"GATEWAY_UPSTREAM_CONCURRENCY": "1", "GATEWAY_QUEUE_TIMEOUT_S": "0.5"})
    slow = threading.Thread(target=call, args=(gw2.url + "/v1/chat/completions",),
                            kwargs={"key": key, "body": {**CHAT, "stream": True, "delay_s": 0.4}, "timeout_s": 30})
    slow.start()
    time.sleep(0.3)
    status, headers, body = call(gw2.url + "/v1/chat/completions", key=key, body=CHAT, timeout_s=30)
    slow.join(30)
    assert status == 503 and body["error"]["code"] == "engine_busy" and headers.get("Retry-After") == "5"
