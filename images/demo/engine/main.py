"""appliance templated TEST inference engine -- NOT a language model; a test fixture, not shipped.

A stdlib-only HTTP server with an OpenAI-compatible surface, used by the tests (and the stack
benchmarks) so the whole appliance -- gateway, keys, sample apps, health gating, the agent --
runs fast and deterministically on any machine with Docker, without accelerators, weights or a
registry. Its catalog entry (engine ``demo-engine``, models ``demo-chat``/``demo-embed``) lives
only in the tests' catalog overlay, tests/fixtures/catalog/templated.yaml: the shipped catalog
has none of it, so no user-facing command starts it (``appliance init --demo`` serves the real
built-in models on llama.cpp), and the wheel does not ship this directory. Tests plan it with
the overlay in their data dir and ``appliance init --demo --models demo-chat,demo-embed``.
Answers are TEMPLATES that quote the request (so tests can check them); every response says it
comes from the demo engine. Embeddings are real, deterministic
hashed bag-of-words vectors, so retrieval in the knowledge-base app genuinely works.

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (``stream: true`` gives
server-sent events), POST /v1/completions, POST /v1/embeddings.
Configuration: command-line ``--host --port --served-model-name --role`` (what the catalog's
start args pass), else env PORT (8000), SERVED_MODEL_NAME (comma-separated names it answers
to), MODEL_ROLE (chat | embedding | completion); EMBEDDING_DIM (256); DEMO_FAIL_HEALTH=1 (never
healthy: used to test health gating); DEMO_START_DELAY_S (seconds before it listens).
ENGINE_API_KEY_FILE: a file whose first line is the secret every request must carry
(``Authorization: Bearer <secret>``, else 401; ``/health`` stays open -- Docker's and the
runtime's health probes carry no key), as a real engine requires it of the gateway. The file is
re-read when it changes (a rotated secret needs no restart); it must be readable at start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENGINE = "appliance-demo-engine"
VERSION = "0.1.0"
NOTICE = "appliance demo engine: templated answer, not a language model"
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\uffff]+")

MODELS = [m.strip() for m in os.environ.get("SERVED_MODEL_NAME", "demo-chat").split(",") if m.strip()]
ROLE = os.environ.get("MODEL_ROLE", "chat")
DIM = int(os.environ.get("EMBEDDING_DIM", "256"))
FAIL_HEALTH = os.environ.get("DEMO_FAIL_HEALTH") == "1"
STARTED = time.time()


class EngineKey:
    """The secret callers must present, from ENGINE_API_KEY_FILE (None: no key required).

    Each check stats the file (a microsecond) and re-reads it when its (mtime, size, inode)
    changed; a file that turns unreadable or empty keeps the last secret (fail closed: never
    open)."""

    def __init__(self, path: str | None):
        self.path = path
        self.secret = ""
        self._sig = None
        if path:
            self.refresh()
            if not self.secret:
                raise SystemExit(f"error: the engine key file {path} (ENGINE_API_KEY_FILE) is unreadable or empty")

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            if sig == self._sig:
                return
            with open(self.path, encoding="utf-8") as fh:
                secret = fh.readline().strip()
        except (OSError, UnicodeDecodeError):
            return
        if secret:
            self.secret, self._sig = secret, sig

    def allows(self, header: str | None) -> bool:
        if not self.path:
            return True
        self.refresh()
        scheme, _, presented = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self.secret.encode())


KEY = EngineKey(None)


def tokens(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text or "")]


def embed(text: str) -> list[float]:
    """Hashed bag of words (unigrams + bigrams), L2-normalised: similar texts, similar vectors."""
    vec = [0.0] * DIM
    words = tokens(text)
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    for gram in grams:
        digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
        idx = int.from_bytes(digest[:4], "little") % DIM
        sign = 1.0 if digest[4] & 1 else -1.0
        vec[idx] += sign * (1.0 if " " not in gram else 0.5)
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


def _content(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def chat_answer(messages: list[dict]) -> str:
    user = next((_content(m) for m in reversed(messages) if m.get("role") == "user"), "")
    system = " ".join(_content(m) for m in messages if m.get("role") == "system").strip()
    answer = f'[{NOTICE}] You asked: "{user.strip()}".'
    if system:
        snippet = system if len(system) <= 300 else system[:297] + "..."
        answer += f' Context given: "{snippet}"'
    return answer


def completion_answer(prompt: str) -> str:
    return f'[{NOTICE}] Prompt was: "{prompt.strip()}".'


class Handler(BaseHTTPRequestHandler):
    server_version = f"{ENGINE}/{VERSION}"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: headers and body are two writes; avoid 40 ms stalls on keep-alive

    def log_request(self, code="-", size="-"):  # successful health probes are not worth a line
        if self.path == "/health" and str(code) == "200":
            return
        super().log_request(code, size)

    def log_message(self, fmt, *args):  # one short line per request, no bodies
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    # ---- helpers -----------------------------------------------------------------------
    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(code, {"error": {"message": message, "type": kind, "code": code}})

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "request body is not valid JSON")
            return None
        if not isinstance(data, dict):
            self._error(400, "request body must be a JSON object")
            return None
        return data

    def _model(self, body: dict) -> str | None:
        model = body.get("model") or MODELS[0]
        if model not in MODELS:
            self._error(404, f"model {model!r} is not served here (served: {', '.join(MODELS)})",
                        "model_not_found")
            return None
        return model

    def _refused(self) -> bool:
        """True (and 401 sent) when the request lacks the engine's secret. A small body is read
        and dropped (closing on unread bytes would reset the connection under the answer); the
        connection is closed after the answer."""
        if KEY.allows(self.headers.get("Authorization")):
            return False
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        self.close_connection = True
        self._send(401, {"error": {"message": "this engine answers only its gateway (a valid engine key is "
                                   "required)", "type": "authentication_error", "code": 401}},
                   {"Connection": "close", "WWW-Authenticate": "Bearer"})
        return True

    # ---- routes ------------------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path != "/health" and self._refused():
            return
        if path == "/health":
            if FAIL_HEALTH:
                return self._error(503, "demo engine configured to never be healthy (DEMO_FAIL_HEALTH=1)")
            return self._send(200, {"status": "ok", "engine": ENGINE, "demo": True, "models": MODELS,
                                    "role": ROLE, "uptime_s": round(time.time() - STARTED, 1)})
        if path == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": int(STARTED), "owned_by": ENGINE,
                 "role": ROLE, "demo": True} for m in MODELS]})
        return self._error(404, f"no route {path}")

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if self._refused():
            return
        body = self._body()
        if body is None:
            return
        if path == "/v1/chat/completions":
            return self._chat(body)
        if path == "/v1/completions":
            return self._completion(body)
        if path == "/v1/embeddings":
            return self._embeddings(body)
        return self._error(404, f"no route {path}")

    def _chat(self, body: dict) -> None:
        model = self._model(body)
        if model is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "'messages' must be a non-empty list")
        text = chat_answer(messages)
        prompt_tokens = sum(len(tokens(_content(m))) for m in messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens(text)),
                 "total_tokens": prompt_tokens + len(tokens(text))}
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.get("stream"):
            return self._stream(cid, created, model, text, usage)
        self._send(200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": usage, "system_fingerprint": ENGINE})

    def _stream(self, cid: str, created: int, model: str, text: str, usage: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> None:
            payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            payload.update(extra or {})
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        words = text.split(" ")
        for i, word in enumerate(words):
            chunk({"content": word if i == 0 else " " + word})
        chunk({}, "stop", {"usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _completion(self, body: dict) -> None:
        model = self._model(body)
        if model is None:
            return
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            prompt = " ".join(map(str, prompt))
        text = completion_answer(str(prompt))
        pt, ct = len(tokens(str(prompt))), len(tokens(text))
        self._send(200, {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
                         "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                         "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}})

    def _embeddings(self, body: dict) -> None:
        model = self._model(body)
        if model is None:
            return
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return self._error(400, "'input' must be a string or a list of strings")
        data = [{"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(inputs)]
        pt = sum(len(tokens(t)) for t in inputs)
        self._send(200, {"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": pt, "total_tokens": pt}})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that hangs up early (health probes, cancelled streams) is not an error
        if isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv: list[str]) -> None:
    global MODELS, ROLE, KEY
    import argparse

    parser = argparse.ArgumentParser(description="appliance DEMO engine (not a language model)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--role", default=None)
    args = parser.parse_args(argv)
    if args.served_model_name:
        MODELS = [m.strip() for m in args.served_model_name.split(",") if m.strip()]
    ROLE = args.role or ROLE
    KEY = EngineKey(os.environ.get("ENGINE_API_KEY_FILE") or None)
    delay = float(os.environ.get("DEMO_START_DELAY_S", "0") or 0)
    if delay:
        time.sleep(delay)
    port = args.port
    server = Server((args.host, port), Handler)
    sys.stderr.write(f"{ENGINE} {VERSION} (DEMO, not a language model) serving {', '.join(MODELS)} "
                     f"as {ROLE} on port {port}{' (engine key required)' if KEY.path else ''}\n")
    try:
        server.serve_forever(poll_interval=1.0)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main(sys.argv[1:])
