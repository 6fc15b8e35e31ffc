"""Sample app: an enterprise knowledge base (retrieval-augmented answers with citations).

Upload documents -> split into overlapping chunks -> embed each chunk through the gateway
with the planned embedding model -> store text and float32 vectors in SQLite on the app's
volume. A question is embedded the same way, ranked against every chunk by cosine
similarity (vectors are L2-normalised at write time, so a dot product), and the best
chunks go to the chat model as numbered sources; the answer comes back with citations
naming the document and the chunk.

Why brute-force cosine in Python: a sample app's corpus is thousands of chunks, which
ranks in milliseconds with no extension module; a vector index would be the next step for
millions.

Environment (besides appkit's): APP_DATA_DIR (/data), EMBED_MODEL and CHAT_MODEL (else
picked from the models the key may use), RERANK_MODEL (optional: re-order the best 20 cosine
hits with it), KB_TOP_K (4), KB_CHUNK_CHARS (800), KB_MIN_SCORE (0.17: the relevance threshold).

API: GET /api/info (with "evaluation_models"); GET /api/documents; POST /api/documents
{"name", "text"} (application/json) or a multipart/form-data upload of one ``file`` (UTF-8 text,
Markdown or HTML; an optional ``name`` field renames it); DELETE /api/documents/<id>; POST /api/ask {"question", "k"} ->
{"answer", "citations": [{"n", "document", "document_id", "chunk", "score", "text"}]}
(``"generate": false``: the citations only, no chat call -- for evaluating retrieval).
"""

from __future__ import annotations

import array
import hashlib
import html.parser
import math
import os
import re
import sqlite3
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# appkit.py: beside main.py in the image (the build copies images/apps/common/ in), in ../common in the source tree
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "common")]
from appkit import Gateway, GatewayError, HTTPError, accepts, app_info, log, serve  # noqa: E402

GW = Gateway()
MAX_DOC_CHARS = 5_000_000
# The cosine similarity below which a chunk is not an answer: chosen on the committed evaluation
# set (tests/fixtures/kb-eval: 24 questions over 6 documents, 8 unrelated ones) with the built-in
# all-MiniLM-L6-v2 -- the weakest relevant question scored 0.196, the strongest unrelated 0.144.
# Another embedding model has another scale: its catalog entry's relevance_threshold, or KB_MIN_SCORE.
# The runtime passes the bound embedding model's catalog threshold as EMBED_MIN_SCORE.
MIN_SCORE = float(os.environ.get("KB_MIN_SCORE") or os.environ.get("EMBED_MIN_SCORE") or "0.17")
SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL, chars INTEGER NOT NULL, chunks INTEGER NOT NULL, embed_model TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id)
    ON DELETE CASCADE, idx INTEGER NOT NULL, text TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""
SYSTEM = ("You answer questions from the company's knowledge base. Use ONLY the numbered sources below and cite "
          "them like [1] after each statement. If the sources do not contain the answer, say that the knowledge "
          "base has no answer.")


def db() -> sqlite3.Connection:
    directory = os.environ.get("APP_DATA_DIR", "/data")
    os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(os.path.join(directory, "kb.sqlite"), timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    return conn


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr", "section"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def to_text(name: str, text: str) -> str:
    if name.lower().endswith((".html", ".htm")) or text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        p = _Text()
        p.feed(text)
        text = "".join(p.parts)
    return text.replace("\r\n", "\n")


def chunk(text: str, target: int = 800) -> list[str]:
    """Paragraph-aware chunks of about ``target`` characters; long paragraphs split at sentences.

    Each chunk after the first starts with the last sentence of the previous one, so a fact
    that straddles a boundary is still retrievable.
    """
    paras = [re.sub(r"[ \t]+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    pieces: list[str] = []
    for p in (p for p in paras if p):
        if len(p) <= target:
            pieces.append(p)
            continue
        sentences = re.split(r"(?<=[.!?。！？])\s+", p)
        buf = ""
        for s in sentences:
            while len(s) > target:  # a "sentence" longer than a chunk: hard split
                if buf:
                    pieces.append(buf)
                    buf = ""
                pieces.append(s[:target])
                s = s[target:]
            if buf and len(buf) + 1 + len(s) > target:
                pieces.append(buf)
                buf = s
            else:
                buf = f"{buf} {s}".strip()
        if buf:
            pieces.append(buf)
    chunks: list[str] = []
    buf = ""
    for piece in pieces:
        if buf and len(buf) + 2 + len(piece) > target:
            chunks.append(buf)
            tail = re.split(r"(?<=[.!?。！？])\s+", buf)[-1]
            buf = (tail + "\n\n" + piece) if len(tail) < target // 3 else piece
        else:
            buf = f"{buf}\n\n{piece}" if buf else piece
    if buf:
        chunks.append(buf)
    return chunks


def normalise(vec: list[float]) -> array.array:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return array.array("f", (v / norm for v in vec))


class Index:
    """All chunk vectors in memory (reloaded after a change), ranked by dot product."""

    def __init__(self):
        self.lock = threading.Lock()
        self.version = 0
        self.loaded = -1
        self.rows: list[tuple[int, array.array]] = []

    def invalidate(self) -> None:
        with self.lock:
            self.version += 1

    def search(self, conn: sqlite3.Connection, query: array.array, k: int) -> list[tuple[float, int]]:
        with self.lock:
            if self.loaded != self.version:
                rows = []
                for r in conn.execute("SELECT id, dim, vector FROM chunks"):
                    v = array.array("f")
                    v.frombytes(r["vector"])
                    rows.append((r["id"], v))
                self.rows, self.loaded = rows, self.version
            rows = self.rows
        scored = [(sum(a * b for a, b in zip(query, v)), cid) for cid, v in rows if len(v) == len(query)]
        scored.sort(reverse=True)
        return scored[:k]


INDEX = Index()


def add_document(name: str, text: str) -> dict:
    name = os.path.basename(name.strip())[:200]
    if not name:
        raise HTTPError(400, "the document needs a name")
    if not text.strip():
        raise HTTPError(400, f"{name}: the document is empty")
    if len(text) > MAX_DOC_CHARS:
        raise HTTPError(413, f"{name}: larger than {MAX_DOC_CHARS} characters")
    text = to_text(name, text)
    parts = chunk(text, int(os.environ.get("KB_CHUNK_CHARS", "800")))
    model = GW.pick("EMBED_MODEL", hints=("embed", "bge", "e5", "gte", "m3"))
    t0 = time.monotonic()
    vectors = [normalise(v) for v in GW.embed(model, parts)]
    embed_s = time.monotonic() - t0
    digest = hashlib.sha256(text.encode()).hexdigest()
    conn = db()
    try:
        with conn:
            conn.execute("DELETE FROM documents WHERE name=?", (name,))  # re-upload replaces
            cur = conn.execute("INSERT INTO documents(name, sha256, chars, chunks, embed_model, created_at) "
                               "VALUES(?,?,?,?,?,?)", (name, digest, len(text), len(parts), model, time.time()))
            doc_id = cur.lastrowid
            conn.executemany("INSERT INTO chunks(doc_id, idx, text, dim, vector) VALUES(?,?,?,?,?)",
                             [(doc_id, i, p, len(v), v.tobytes()) for i, (p, v) in enumerate(zip(parts, vectors))])
    finally:
        conn.close()
    INDEX.invalidate()
    return {"id": doc_id, "name": name, "chunks": len(parts), "chars": len(text), "embed_model": model,
            "embed_s": round(embed_s, 3)}


def api_info(_req):
    conn = db()
    try:
        docs = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    finally:
        conn.close()
    return 200, app_info("knowledge-base", "Knowledge base", documents=docs, chunks=chunks), "application/json"


def api_documents(_req):
    conn = db()
    try:
        docs = [dict(r) for r in conn.execute("SELECT id, name, chars, chunks, embed_model, created_at "
                                              "FROM documents ORDER BY name")]
    finally:
        conn.close()
    return 200, {"documents": docs}, "application/json"


@accepts("application/json", "multipart/form-data")
def api_upload(req):
    ctype = (req.headers.get("Content-Type") or "").lower()
    if ctype.startswith("application/json"):
        body = req.json_body()
        name, text = body.get("name"), body.get("text")
        if not isinstance(name, str) or not isinstance(text, str):
            raise HTTPError(400, 'send {"name": "file.txt", "text": "..."}')
    else:  # multipart/form-data: one file (what the page's file picker sends)
        fields, files = req.form_files()
        if len(files) != 1:
            raise HTTPError(400, f"upload one file per request (field \"file\"), got {len(files)}")
        filename, data = files[0]
        name = fields.get("name") or filename
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(415, f"{name}: only UTF-8 text, Markdown or HTML documents are supported") from None
    return 201, add_document(name, text), "application/json"


def api_delete(req):
    try:
        doc_id = int(req.route.rsplit("/", 1)[1])
    except ValueError:
        raise HTTPError(400, "DELETE /api/documents/<id>") from None
    conn = db()
    try:
        with conn:
            gone = conn.execute("DELETE FROM documents WHERE id=?", (doc_id,)).rowcount
    finally:
        conn.close()
    INDEX.invalidate()
    if not gone:
        raise HTTPError(404, f"no document {doc_id}")
    return 200, {"deleted": doc_id}, "application/json"


def api_ask(req):
    body = req.json_body()
    question = str(body.get("question") or "").strip()
    if not question:
        raise HTTPError(400, 'send {"question": "..."}')
    k = max(1, min(int(body.get("k") or os.environ.get("KB_TOP_K", "4")), 10))
    embed_model = GW.pick("EMBED_MODEL", hints=("embed", "bge", "e5", "gte", "m3"))
    qvec = normalise(GW.embed(embed_model, [question])[0])
    rerank_model = os.environ.get("RERANK_MODEL", "")
    conn = db()
    try:
        hits = [(s, cid) for s, cid in INDEX.search(conn, qvec, max(k * 5, 20) if rerank_model else k)
                if s >= MIN_SCORE]
        rows = {r["id"]: r for r in conn.execute(
            f"SELECT c.id, c.idx, c.text, d.name, d.id AS doc_id FROM chunks c JOIN documents d ON d.id=c.doc_id "
            f"WHERE c.id IN ({','.join('?' * len(hits))})", [cid for _, cid in hits])} if hits else {}
    finally:
        conn.close()
    reranked = False
    if rerank_model and len(hits) > 1:
        hits, reranked = rerank(rerank_model, question, [(s, c) for s, c in hits if c in rows], rows)
    hits = hits[:k]
    citations = [{"n": n, "document": rows[cid]["name"], "document_id": rows[cid]["doc_id"],
                  "chunk": rows[cid]["idx"], "score": round(score, 4), "text": rows[cid]["text"]}
                 for n, (score, cid) in enumerate(((s, c) for s, c in hits if c in rows), start=1)]
    if not citations:
        return 200, {"answer": "The knowledge base has no document that matches this question.",
                     "citations": [], "model": None}, "application/json"
    if body.get("generate") is False:  # retrieval only: evaluating the index needs no answer text
        return 200, {"answer": None, "citations": citations, "model": None, "embed_model": embed_model,
                     "reranked": reranked}, "application/json"
    sources = "\n\n".join(f"[{c['n']}] ({c['document']}, part {c['chunk'] + 1})\n{c['text']}" for c in citations)
    chat_model = GW.pick("CHAT_MODEL", avoid=("embed", "rerank", "bge", "e5-"))
    answer, raw = GW.chat(chat_model, [{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": f"Question: {question}\n\nSources:\n{sources}"}],
                          temperature=0.1, max_tokens=700)
    return 200, {"answer": answer, "citations": citations, "model": chat_model, "embed_model": embed_model,
                 "reranked": reranked, "usage": raw.get("usage")}, "application/json"


def rerank(model: str, question: str, hits: list[tuple[float, int]], rows: dict) -> tuple[list, bool]:
    """Re-order cosine candidates with a rerank model (cross-encoder) through the gateway.

    Any failure keeps the cosine order: reranking improves answers but is never required.
    """
    try:
        out = GW.request("/v1/rerank", {"model": model, "query": question,
                                        "documents": [rows[cid]["text"] for _, cid in hits]})
        results = out.get("results") or out.get("data") or []
        order = [(float(r.get("relevance_score", r.get("score", 0.0))), int(r["index"])) for r in results]
        order.sort(reverse=True)
        return [(score, hits[i][1]) for score, i in order if 0 <= i < len(hits)], True
    except (GatewayError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log({"event": "rerank_failed", "error": str(exc)[:200]})
        return hits, False


if __name__ == "__main__":
    db().close()  # create the schema (and fail fast on an unwritable volume)
    serve("knowledge-base", {("GET", "/api/info"): api_info, ("GET", "/api/documents"): api_documents,
                             ("POST", "/api/documents"): api_upload, ("DELETE", "/api/documents/"): api_delete,
                             ("POST", "/api/ask"): api_ask}, os.path.join(HERE, "static"))
