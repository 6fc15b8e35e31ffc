"""Sample app: customer-service chat, grounded in an FAQ, answering through the gateway.

For each question the backend picks the FAQ entries most similar to it (TF-IDF over
words; an FAQ is small, so this is exact and instant), puts them in the system prompt and
asks the chat model through the gateway with the app's own key. The answer comes back
with the FAQ entries it was grounded on, so an agent can check it.

Environment (besides appkit's): CHAT_MODEL (else the first model the key may use),
CS_FAQ_FILE (default: $APP_DATA_DIR/faq.json if present, else the bundled faq.json),
CS_SYSTEM_PROMPT (overrides the default prompt; ``{company}`` is replaced), CS_TOP_K (3).

API: GET /api/info (with "evaluation_models"), GET /api/faq, POST /api/chat {"messages": [{"role", "content"}...]}
-> {"answer", "model", "grounding": [{"q", "a", "score"}]}.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# appkit.py: beside main.py in the image (the build copies images/apps/common/ in), in ../common in the source tree
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "common")]
from appkit import Gateway, HTTPError, app_info, serve  # noqa: E402

DEFAULT_PROMPT = (
    "You are the customer-service assistant of {company}. Be brief and friendly. Answer ONLY from "
    "the FAQ entries below; if they do not cover the question, say so and offer a human agent. "
    "Never invent prices, dates or policies.")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\uffff]+")
_STOP = {"a", "an", "the", "is", "are", "do", "does", "i", "you", "your", "my", "to", "of", "and", "or", "in",
         "on", "for", "can", "how", "what", "which", "it", "me", "we", "with", "be", "please"}
GW = Gateway()


def words(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP]


def load_faq() -> dict:
    path = os.environ.get("CS_FAQ_FILE")
    if not path:
        data_faq = os.path.join(os.environ.get("APP_DATA_DIR", "/data"), "faq.json")
        path = data_faq if os.path.isfile(data_faq) else os.path.join(HERE, "faq.json")
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    entries = [e for e in doc.get("entries", []) if isinstance(e, dict) and e.get("q") and e.get("a")]
    return {"company": doc.get("company", "our company"), "entries": entries, "source": path}


class FaqIndex:
    """TF-IDF vectors of the FAQ entries (question counted twice: it says what the entry is about)."""

    def __init__(self, entries: list[dict]):
        self.entries = entries
        docs = [words(e["q"]) * 2 + words(e["a"]) for e in entries]
        n = len(docs) or 1
        df: dict[str, int] = {}
        for d in docs:
            for w in set(d):
                df[w] = df.get(w, 0) + 1
        self.idf = {w: math.log(1 + n / c) for w, c in df.items()}
        self.vectors = [self._vector(d) for d in docs]

    def _vector(self, toks: list[str]) -> dict[str, float]:
        tf: dict[str, float] = {}
        for w in toks:
            if w in self.idf:
                tf[w] = tf.get(w, 0.0) + self.idf[w]
        norm = math.sqrt(sum(v * v for v in tf.values())) or 1.0
        return {w: v / norm for w, v in tf.items()}

    def top(self, question: str, k: int) -> list[tuple[float, dict]]:
        q = self._vector(words(question))
        scored = [(sum(q.get(w, 0.0) * v for w, v in vec.items()), e) for vec, e in zip(self.vectors, self.entries)]
        return sorted([s for s in scored if s[0] > 0], key=lambda s: -s[0])[:k]


FAQ = load_faq()
INDEX = FaqIndex(FAQ["entries"])


def system_prompt(grounding: list[tuple[float, dict]]) -> str:
    base = os.environ.get("CS_SYSTEM_PROMPT") or DEFAULT_PROMPT
    lines = [base.replace("{company}", FAQ["company"]), "", "FAQ:"]
    if not grounding:
        lines.append("(no FAQ entry matches this question)")
    for _, e in grounding:
        lines.append(f"Q: {e['q']}\nA: {e['a']}")
    return "\n".join(lines)


def api_info(_req):
    return 200, app_info("customer-service", "Customer-service chat", company=FAQ["company"],
                         faq_entries=len(FAQ["entries"]), gateway=os.environ.get("GATEWAY_PUBLIC_URL", "")), \
        "application/json"


def api_faq(_req):
    return 200, {"company": FAQ["company"], "entries": FAQ["entries"]}, "application/json"


def api_chat(req):
    body = req.json_body()
    messages = body.get("messages")
    if isinstance(body.get("question"), str):
        messages = [{"role": "user", "content": body["question"]}]
    if not isinstance(messages, list) or not messages:
        raise HTTPError(400, "send {\"messages\": [{\"role\": \"user\", \"content\": ...}]}")
    messages = [{"role": m.get("role"), "content": str(m.get("content", ""))[:4000]} for m in messages[-12:]
                if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if not question.strip():
        raise HTTPError(400, "the last user message is empty")
    grounding = INDEX.top(question, int(os.environ.get("CS_TOP_K", "3")))
    model = GW.pick("CHAT_MODEL", avoid=("embed", "rerank", "bge", "e5-"))
    answer, raw = GW.chat(model, [{"role": "system", "content": system_prompt(grounding)}] + messages,
                          temperature=0.2, max_tokens=512)
    return 200, {"answer": answer, "model": model, "usage": raw.get("usage"),
                 "grounding": [{"q": e["q"], "a": e["a"], "score": round(s, 3)} for s, e in grounding]}, \
        "application/json"


if __name__ == "__main__":
    serve("customer-service", {("GET", "/api/info"): api_info, ("GET", "/api/faq"): api_faq,
                               ("POST", "/api/chat"): api_chat}, os.path.join(HERE, "static"))
