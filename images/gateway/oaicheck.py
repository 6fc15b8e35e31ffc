"""What an OpenAI request must look like before an engine sees it, and errors in OpenAI's shape.

Why at the gateway: engines differ in what they accept and in how they say no (llama.cpp answers
``temperature="hot"`` with ``{"error": {"code": 400, ...}}`` -- an integer code; another engine
coerces it silently, another crashes a worker). Clients (the OpenAI SDKs) expect one shape --
``{"error": {"message", "type", "param", "code": "<string>"}}`` -- and one meaning. So the
gateway checks the fields it knows, per endpoint, and turns any engine error into that shape.

Only standard library; no field is ever echoed back with its value (a prompt can be secret).
"""

from __future__ import annotations

import json

NUMBER = (int, float)
MAX_N = 8
MAX_STOP = 4
MAX_BATCH = 2048          # embedding inputs per request


class Invalid(Exception):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _bounded(req: dict, name: str, lo, hi, *, integer: bool = False) -> None:
    """``req[name]``, when given, is a number (an integer with ``integer``) in [lo, hi]."""
    if name not in req or req[name] is None:
        return
    v = req[name]
    if isinstance(v, bool) or not isinstance(v, int if integer else NUMBER):
        raise Invalid(f"'{name}' must be {'an integer' if integer else 'a number'}", name, "invalid_type")
    if not lo <= v <= hi:
        raise Invalid(f"'{name}' must be between {lo:g} and {hi:g}", name, "out_of_range")


def _boolean(req: dict, name: str) -> None:
    if name in req and req[name] is not None and not isinstance(req[name], bool):
        raise Invalid(f"'{name}' must be true or false", name, "invalid_type")


def _sampling(req: dict) -> None:
    _bounded(req, "temperature", 0, 2)
    _bounded(req, "top_p", 0, 1)
    _bounded(req, "presence_penalty", -2, 2)
    _bounded(req, "frequency_penalty", -2, 2)
    _bounded(req, "max_tokens", 1, 1 << 20, integer=True)
    _bounded(req, "max_completion_tokens", 1, 1 << 20, integer=True)
    _bounded(req, "seed", -(1 << 63), (1 << 63) - 1, integer=True)
    _boolean(req, "stream")
    _bounded(req, "n", 1, MAX_N, integer=True)
    if req.get("n") not in (None, 1) and req.get("stream"):
        raise Invalid("'n' greater than 1 is not supported with 'stream'", "n", "unsupported_value")
    stop = req.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= MAX_STOP
                                                          and all(isinstance(s, str) for s in stop))):
        raise Invalid(f"'stop' must be a string or a list of at most {MAX_STOP} strings", "stop", "invalid_type")


def _text(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _tokens(value) -> bool:
    """A non-empty list of token ids (OpenAI accepts them wherever it accepts text)."""
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool)
                                                           for t in value)


def _inputs(value) -> list | None:
    """The items of a ``prompt``/``input``: a text, token ids, or a list of texts or of token-id
    lists; None when it is none of these (or empty)."""
    if _text(value) or _tokens(value):
        return [value]
    if isinstance(value, list) and value and all(_text(x) or _tokens(x) for x in value):
        return value
    return None


def check(path: str, req: dict) -> None:
    """Raise :class:`Invalid` when ``req`` is not a valid request for ``path``."""
    if path == "/v1/chat/completions":
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Invalid("'messages' must be a non-empty list", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise Invalid(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
            content = m.get("content")
            if content is not None and not isinstance(content, (str, list)):
                raise Invalid(f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
        if not any(_text(m.get("content")) or isinstance(m.get("content"), list) for m in msgs):
            raise Invalid("the messages are all empty", "messages", "empty_input")
        _sampling(req)
    elif path == "/v1/completions":
        if _inputs(req.get("prompt")) is None:
            raise Invalid("'prompt' must be a non-empty string, token ids, or a list of them", "prompt",
                          "empty_input")
        _sampling(req)
    elif path == "/v1/embeddings":
        items = _inputs(req.get("input"))
        if items is None or len(items) > MAX_BATCH:
            raise Invalid(f"'input' must be a non-empty string, token ids, or a list of 1 to {MAX_BATCH} of them",
                          "input", "empty_input")
        fmt = req.get("encoding_format")
        if fmt not in (None, "float", "base64"):
            raise Invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format", "unsupported_value")


def error_body(message: str, *, kind: str, code: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}},
                      separators=(",", ":")).encode()


def normalize_error(status: int, body: bytes) -> bytes:
    """An engine's error response in OpenAI's shape: ``code`` always a string, ``type`` set, the
    engine's message kept (it names the field, never a prompt)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        err = {"message": (body[:300].decode("utf-8", "replace").strip() or f"engine error {status}")}
    code = err.get("code")
    kind = err.get("type") if isinstance(err.get("type"), str) and err.get("type") else \
        ("invalid_request_error" if status < 500 else "api_error")
    param = err.get("param") if isinstance(err.get("param"), str) else None
    if not isinstance(code, str):
        code = {400: "invalid_request", 401: "upstream_unauthorized", 404: "not_found", 413: "too_large",
                429: "rate_limited", 501: "not_supported", 503: "model_loading"}.get(status, f"upstream_{status}")
    return error_body(str(err.get("message") or f"engine error {status}"), kind=kind, code=code, param=param)
