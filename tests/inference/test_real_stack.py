"""The built-in stack answers for real: the official OpenAI SDK against the gateway, llama.cpp behind it.

The chat model is SmolLM2-135M-Instruct (weak but a language model) and the embedding model
all-MiniLM-L6-v2; answers are checked for being real (not a template) and right where a 135M
model is reliably right (arithmetic at temperature 0), counts for being the engine's tokenizer's.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_init_says_it_is_a_small_model_and_plans_the_real_engine(real_stack):
    services = {s["model"]: s for s in real_stack.init["plan"]["services"]}
    assert set(services) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    for s in services.values():
        assert s["engine"] == "llama-cpp" and s["evaluation"] is True and not s["demo"]
        assert s["cpuset"] is not None and s["weights_files"]
    assert any("import" in step or "status" in step for step in real_stack.init["next_steps"])


def test_chat_is_a_real_answer_with_the_engines_token_counts(client, real_stack):
    r = client.chat.completions.create(model=real_stack.chat, temperature=0, max_tokens=24,
                                       messages=[{"role": "user", "content": "What is 2 + 3? Answer with the number."}])
    text = r.choices[0].message.content
    assert "5" in text and "templated" not in text and "You asked" not in text, text
    assert r.model == real_stack.chat
    u = r.usage
    assert u.prompt_tokens > 5 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_a_streamed_chat_arrives_in_pieces(client, real_stack):
    pieces = []
    with client.chat.completions.create(model=real_stack.chat, stream=True, max_tokens=32, temperature=0,
                                        messages=[{"role": "user", "content": "Name three colours."}]) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) >= 3 and "".join(pieces).strip(), pieces


def test_a_streamed_completion_arrives_in_pieces_then_done(client, real_stack):
    """`/v1/completions` with stream=true (the old demo engine ignored `stream`)."""
    stream = client.completions.create(model=real_stack.chat, prompt="The capital of France is", max_tokens=12,
                                       stream=True, temperature=0)
    texts = [c.choices[0].text for c in stream]
    assert len(texts) >= 3 and "Paris" in "".join(texts), texts
    # on the wire: server-sent events ending in [DONE]
    req = urllib.request.Request(f"{real_stack.gateway}/completions", method="POST",
                                 data=json.dumps({"model": real_stack.chat, "prompt": "One, two,", "max_tokens": 6,
                                                  "stream": True}).encode(),
                                 headers={"Authorization": f"Bearer {real_stack.key}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        events = [ln for ln in resp.read().decode().splitlines() if ln.startswith("data: ")]
    assert len(events) >= 3 and events[-1] == "data: [DONE]", events


def test_embeddings_for_a_batch_with_token_usage(client, real_stack):
    r = client.embeddings.create(model=real_stack.embed, input=["first sentence", "a second one", "third"])
    assert [d.index for d in r.data] == [0, 1, 2] and all(len(d.embedding) == 384 for d in r.data)
    assert r.usage.prompt_tokens >= 3


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_paraphrases_score_higher_than_unrelated_sentences(client, real_stack):
    pairs = json.loads((FIXTURES / "embedding-pairs.json").read_text())["pairs"]
    texts = [t for p in pairs for t in (p["anchor"], p["paraphrase"], p["unrelated"])]
    vecs = [d.embedding for d in client.embeddings.create(model=real_stack.embed, input=texts).data]
    para, unrel = [], []
    for i in range(len(pairs)):
        a, p, u = vecs[3 * i], vecs[3 * i + 1], vecs[3 * i + 2]
        para.append(_cos(a, p))
        unrel.append(_cos(a, u))
    print(f"paraphrase cosine {min(para):.3f}..{max(para):.3f}, unrelated {min(unrel):.3f}..{max(unrel):.3f}")
    assert all(p > u for p, u in zip(para, unrel))
    assert min(para) > max(unrel)


@pytest.mark.parametrize("body,param", [
    ({"temperature": "hot"}, "temperature"),
    ({"n": 2, "stream": True}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
    ({"max_tokens": -1}, "max_tokens"),
])
def test_invalid_parameters_get_an_openai_shaped_400_with_a_string_code(client, real_stack, body, param):
    import openai

    kwargs = {"model": real_stack.chat, "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**kwargs)
    e = err.value
    assert e.status_code == 400 and isinstance(e.code, str) and e.code, e.body
    assert e.body["type"] == "invalid_request_error" and e.body["param"] == param


def test_empty_embedding_input_and_prompt_are_refused(client, real_stack):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=real_stack.embed, input="")
    assert err.value.code == "empty_input"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=real_stack.chat, prompt="")
    assert err.value.code == "empty_input"


def test_an_engine_refusal_reaches_the_client_with_a_string_code(client, real_stack):
    """A field the gateway does not check but the engine refuses: still OpenAI's shape."""
    import openai

    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=real_stack.chat, messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"top_k": "many"})
    assert 400 <= err.value.status_code < 500 and isinstance(err.value.code, str), err.value.body


# ---- load: bursts through the gateway ------------------------------------------------------------
def _post(url: str, key: str, body: dict, timeout_s: float = 180) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _burst(n: int, fn) -> list:
    out: list = [None] * n
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 600
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "requests still running after 10 minutes"
    return out


def test_50_concurrent_streams_and_200_requests_all_complete(real_stack):
    url = f"{real_stack.gateway}/chat/completions"

    def stream(i):
        status, body = _post(url, real_stack.key, {"model": real_stack.chat, "stream": True, "max_tokens": 12,
                                                   "messages": [{"role": "user", "content": f"Count to {i % 5 + 2}."}]})
        events = [ln for ln in body.decode("utf-8", "replace").splitlines() if ln.startswith("data: ")]
        return status, events[-1] if events else None, len(events)

    t0 = time.monotonic()
    streams = _burst(50, stream)
    t1 = time.monotonic()
    bad = [s for s in streams if s[0] != 200 or s[1] != "data: [DONE]" or s[2] < 2]
    assert not bad, bad[:3]

    def plain(i):
        return _post(url, real_stack.key, {"model": real_stack.chat, "max_tokens": 4,
                                           "messages": [{"role": "user", "content": f"Say {i}."}]})[0]

    statuses = _burst(200, plain)
    t2 = time.monotonic()
    print(f"50 streams in {t1 - t0:.1f}s, 200 requests in {t2 - t1:.1f}s: statuses {sorted(set(statuses))}")
    assert statuses == [200] * 200, sorted(set(statuses))


# ---- the apps on the real models -------------------------------------------------------------------
def _app(real_stack, name: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """One call to an app's API as the signed-in admin (the apps answer 401 without a session)."""
    url = real_stack.apps[name].rstrip("/") + path
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json", "Cookie": real_stack.session})
    try:
        with urllib.request.urlopen(req, timeout=180) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_customer_service_answers_from_its_faq(real_stack):
    status, out = _app(real_stack, "customer-service", "/api/chat",
                       {"messages": [{"role": "user", "content": "Can I return a product I bought?"}]})
    assert status == 200 and out["model"] == real_stack.chat
    assert out["grounding"] and "return" in out["grounding"][0]["q"].lower()
    assert out["answer"].strip() and "templated" not in out["answer"]


def test_knowledge_base_retrieval_on_the_evaluation_set(real_stack):
    """tests/fixtures/kb-eval: 24 answerable questions over 6 documents, 8 unrelated ones. Reports
    the retrieval hit-rate (the right document among the citations) and the refusals."""
    kb = FIXTURES / "kb-eval"
    for doc in sorted((kb / "docs").iterdir()):
        status, _ = _app(real_stack, "knowledge-base", "/api/documents", {"name": doc.name, "text": doc.read_text()})
        assert status == 201
    qs = json.loads((kb / "questions.json").read_text())
    hits, first = 0, 0
    for q in qs["answerable"]:  # retrieval only (no 24 answers from a 135M model: minutes of CPU)
        status, out = _app(real_stack, "knowledge-base", "/api/ask", {"question": q["q"], "generate": False})
        assert status == 200, out
        docs = [c["document"] for c in out["citations"]]
        hits += q["doc"] in docs
        first += bool(docs) and docs[0] == q["doc"]
    refused = 0
    for q in qs["unrelated"]:
        status, out = _app(real_stack, "knowledge-base", "/api/ask", {"question": q})
        assert status == 200
        refused += not out["citations"] and "no document" in out["answer"]
    n, m = len(qs["answerable"]), len(qs["unrelated"])
    print(f"knowledge base: {hits}/{n} answerable questions retrieved their document (first: {first}/{n}); "
          f"{refused}/{m} unrelated questions refused")
    assert hits >= n - 2 and refused >= m - 1
    # and one full answer, with citations, from the real chat model
    status, out = _app(real_stack, "knowledge-base", "/api/ask", {"question": qs["answerable"][0]["q"]})
    assert status == 200 and out["answer"] and out["model"] == real_stack.chat and out["citations"]
