"""A tiny OpenAI-style engine for the gateway's process-level tests (stdlib only).

Run as ``python3 upstream.py PORT NAME``. It answers like an engine would -- with a
``usage`` object, SSE streaming, embeddings and rerank -- and reports in response headers
what it received (the Authorization header, if any), so tests can check the gateway
never forwards the caller's key. The Docker tests use the real demo engine instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def embed(text: str, dim: int = 64) -> list[float]:
    vec = [0.0] * dim
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        h = int(hashlib.md5(word.encode()).hexdigest(), 16)
        vec[h % dim] += 1.0 if (h >> 8) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "upstream"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *a):
        pass

    def _send(self, status, obj, extra=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Authorization", self.headers.get("Authorization") or "-")
        self.send_header("X-Upstream-Name", self.name)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/health", "/healthz"):
            return self._send(200, {"status": "ok"})
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": self.name, "object": "model"}]})
        self._send(404, {"error": "nope"})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        time.sleep(float(req.get("first_byte_delay_s", 0)))  # on purpose: an engine that hangs before answering
        if self.path == "/v1/embeddings":
            inputs = req["input"] if isinstance(req["input"], list) else [req["input"]]
            data = [{"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(inputs)]
            tokens = sum(len(t.split()) for t in inputs)
            return self._send(200, {"object": "list", "data": data, "model": req["model"],
                                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        if self.path in ("/v1/rerank", "/rerank"):
            q = embed(req["query"])
            scores = [sum(a * b for a, b in zip(q, embed(d))) for d in req["documents"]]
            return self._send(200, {"results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]})
        if self.path == "/v1/chat/completions":
            prompt = " ".join(str(m.get("content")) for m in req.get("messages", []))
        elif self.path == "/v1/completions":
            prompt = str(req.get("prompt"))
        else:
            return self._send(404, {"error": "no such path"})
        words = f"echo from {self.name}: {prompt[:60]}".split()
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words),
                 "total_tokens": len(prompt.split()) + len(words)}
        if not req.get("stream"):
            text = " ".join(words)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                      if self.path.endswith("chat/completions") else {"index": 0, "text": text})
            return self._send(200, {"id": "x", "object": "chat.completion", "model": req["model"],
                                    "choices": [choice], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        delay_s = float(req.get("delay_s", 0))
        for w in words:
            chunk = {"choices": [{"index": 0, "delta": {"content": w + " "}}]}
            data = f"data: {json.dumps(chunk)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(delay_s)  # on purpose: a slow engine, one chunk per delay_s (streaming tests)
        if (req.get("stream_options") or {}).get("include_usage"):
            data = f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))


if __name__ == "__main__":
    H.name = sys.argv[2] if len(sys.argv) > 2 else "upstream"
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    srv.daemon_threads = True
    srv.serve_forever()
