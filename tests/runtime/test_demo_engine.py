"""The templated test engine's OpenAI-compatible surface, run as a plain process (no Docker needed).

images/demo/engine is a test fixture (not shipped; its catalog entry is tests/fixtures/catalog/templated.yaml)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.stack_support import free_port_block
from tests.support import poll

ENGINE = Path(__file__).resolve().parents[2] / "images" / "demo" / "engine" / "main.py"


def _call(port: int, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read().decode()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in ctype else raw
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())


def _start(port: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ENGINE), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            return True
        except OSError:
            return False

    if poll(answers, timeout_s=10, interval_s=0.05)[0]:
        return proc
    proc.kill()
    raise AssertionError(f"demo engine did not start: {proc.stderr.read().decode()}")


@pytest.fixture(scope="module")
def chat_engine():
    port = free_port_block()
    proc = _start(port, "--served-model-name", "demo-chat", "--role", "chat")
    yield port
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="module")
def embed_engine():
    port = free_port_block()
    proc = _start(port, "--served-model-name", "demo-embed", "--role", "embedding")
    yield port
    proc.terminate()
    proc.wait(5)


def test_health_and_models_say_demo(chat_engine):
    code, body = _call(chat_engine, "/health")
    assert code == 200 and body["demo"] is True and body["models"] == ["demo-chat"]
    code, body = _call(chat_engine, "/v1/models")
    assert code == 200 and [m["id"] for m in body["data"]] == ["demo-chat"]


def test_chat_quotes_the_question_and_is_labelled(chat_engine):
    code, body = _call(chat_engine, "/v1/chat/completions", {
        "model": "demo-chat", "messages": [{"role": "system", "content": "Use the FAQ."},
                                           {"role": "user", "content": "Where is my parcel 4711?"}]})
    assert code == 200
    text = body["choices"][0]["message"]["content"]
    assert '"Where is my parcel 4711?"' in text and "demo engine" in text and "Use the FAQ." in text
    assert body["usage"]["prompt_tokens"] == 8  # use the faq where is my parcel 4711


def test_chat_stream_is_server_sent_events(chat_engine):
    code, raw = _call(chat_engine, "/v1/chat/completions", {
        "model": "demo-chat", "stream": True, "messages": [{"role": "user", "content": "stream me"}]})
    assert code == 200
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert '"stream me"' in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_and_unknown_model(chat_engine):
    code, body = _call(chat_engine, "/v1/completions", {"model": "demo-chat", "prompt": "def add(a, b):"})
    assert code == 200 and '"def add(a, b):"' in body["choices"][0]["text"]
    code, body = _call(chat_engine, "/v1/chat/completions", {"model": "gpt-4", "messages": [
        {"role": "user", "content": "x"}]})
    assert code == 404 and body["error"]["type"] == "model_not_found"
    code, body = _call(chat_engine, "/v1/chat/completions", {"model": "demo-chat", "messages": []})
    assert code == 400


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_are_deterministic_and_meaningful(embed_engine):
    docs = ["The warranty covers the battery for two years.",
            "Our office in Berlin opens at nine in the morning.",
            "How long is the battery warranty?"]
    code, body = _call(embed_engine, "/v1/embeddings", {"model": "demo-embed", "input": docs})
    assert code == 200 and len(body["data"]) == 3
    vecs = [d["embedding"] for d in body["data"]]
    assert len(vecs[0]) == 256 and abs(sum(v * v for v in vecs[0]) - 1.0) < 1e-3
    code, again = _call(embed_engine, "/v1/embeddings", {"model": "demo-embed", "input": docs[0]})
    assert again["data"][0]["embedding"] == vecs[0]
    # the question is closer to the warranty sentence than to the office sentence
    assert _cos(vecs[2], vecs[0]) > _cos(vecs[2], vecs[1]) + 0.2
    code, body = _call(embed_engine, "/v1/embeddings", {"model": "demo-embed", "input": [1, 2]})
    assert code == 400


def test_fail_health_mode_never_healthy():
    import os

    port = free_port_block()
    proc = _start(port, env={**os.environ, "DEMO_FAIL_HEALTH": "1"})
    try:
        code, body = _call(port, "/health")
        assert code == 503 and "never be healthy" in body["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(5)


def _call_with(port: int, path: str, body: dict | None = None, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def test_with_a_key_file_it_answers_only_the_key_and_sees_a_rotated_one(tmp_path):
    """ENGINE_API_KEY_FILE (what the runtime mounts): 401 without the secret on every API path,
    /health open for the probes; a replaced file is read again without a restart."""
    import os

    key_file = tmp_path / "api_key"
    key_file.write_text("first-secret\n")
    port = free_port_block()
    proc = subprocess.Popen([sys.executable, str(ENGINE), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "ENGINE_API_KEY_FILE": str(key_file)})
    try:
        def up() -> bool:
            try:
                return _call_with(port, "/health") == 200
            except OSError:
                return False

        assert poll(up, timeout_s=10, interval_s=0.05)[0], proc.stderr.read1().decode() if proc.poll() else ""
        chat = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
        for path, body in (("/v1/models", None), ("/v1/chat/completions", chat), ("/v1/embeddings", {"input": "x"})):
            assert _call_with(port, path, body) == 401
            assert _call_with(port, path, body, key="wrong") == 401
        assert _call_with(port, "/v1/models", key="first-secret") == 200
        assert _call_with(port, "/v1/chat/completions", chat, key="first-secret") == 200
        tmp = tmp_path / "new"
        tmp.write_text("second-secret\n")
        os.replace(tmp, key_file)
        assert _call_with(port, "/v1/models", key="second-secret") == 200
        assert _call_with(port, "/v1/models", key="first-secret") == 401
    finally:
        proc.terminate()
        proc.wait(5)


def test_an_unreadable_key_file_stops_the_start(tmp_path):
    import os

    res = subprocess.run([sys.executable, str(ENGINE), "--port", str(free_port_block())], capture_output=True,
                         text=True, timeout=20, env={**os.environ, "ENGINE_API_KEY_FILE": str(tmp_path / "none")})
    assert res.returncode != 0 and "ENGINE_API_KEY_FILE" in res.stderr and len(res.stderr.strip().splitlines()) == 1
