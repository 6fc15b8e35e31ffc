"""HTML for the console's pages, rendered on the server from the views' dicts.

Why on the server: a page must work without JavaScript (tables; the charts are an addition),
and live refresh fetches the same page's ``<main>`` again (``?fragment=1``) instead of a second
renderer in JavaScript. Chart data travels in the page as ``<script type="application/json">``
blocks (data, never executed), which console.js draws with the carried chart library. Every
value is escaped; nothing from a request is echoed unescaped.
"""

from __future__ import annotations

import json
import time
from html import escape

NAV = (("overview", "/", "Overview"), ("models", "/models", "Models"), ("keys", "/keys", "Keys and usage"),
       ("training", "/training", "Training"), ("releases", "/releases", "Releases"))


def _t(value) -> str:
    return "" if value is None else escape(str(value))


def _ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def _mib(v) -> str:
    return "" if v is None else (f"{v / 1024:.1f} GiB" if v >= 1024 else f"{v} MiB")


def _dur(s) -> str:
    if s is None:
        return ""
    s = int(s)
    return f"{s // 86400}d {s % 86400 // 3600}h" if s >= 86400 else (
        f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60}s")


def table(tid: str, columns: list[str], rows: list[list[str]], empty: str = "none") -> str:
    """A table whose cells are already-escaped HTML."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    if not rows:
        return f'<div class="scroll"><table id="{tid}"><thead><tr>{head}</tr></thead><tbody><tr><td ' \
               f'colspan="{len(columns)}" class="empty">{escape(empty)}</td></tr></tbody></table></div>'
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table id="{tid}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def chart(cid: str, title: str, series: dict[str, list], unit: str = "", *, y_range: list | None = None) -> str:
    """A chart's place and data: console.js draws it; without JavaScript the last values show."""
    data = json.dumps({"title": title, "unit": unit, "series": series, "y_range": y_range}, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # a JSON block can never close its <script>
    last = "".join(f"<li>{escape(n)}: {escape(str(p[-1][1]))}{escape(unit)}</li>" for n, p in series.items() if p)
    return (f'<figure class="chart" id="{cid}"><figcaption>{escape(title)}</figcaption>'
            f'<div class="plot" data-points="{sum(len(p) for p in series.values())}"></div>'
            f'<ul class="last">{last or "<li>no history yet (the agent records one point per pass)</li>"}</ul>'
            f'<script type="application/json" class="chart-data">{data}</script></figure>')


def rate(points: list, per_s: float = 1.0) -> list:
    """A cumulative counter as a rate per ``per_s`` seconds between successive points (a counter
    that went down -- the gateway restarted without its usage file -- starts again from 0)."""
    out = []
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t1 > t0:
            out.append([t1, round(max(0.0, v1 - v0 if v1 >= v0 else v1) * per_s / (t1 - t0), 4)])
    return out


def windows(v: dict) -> str:
    """Links to the same page over the last hour, day or week (the charts' window)."""
    here = v.get("window_s")
    links = [(name, s) for name, s in (("hour", 3600.0), ("day", 86400.0), ("week", 604800.0))]
    return '<p class="windows">' + " · ".join(
        f'<strong>last {n}</strong>' if here == s else f'<a href="?window={n}" class="window">last {n}</a>'
        for n, s in links) + "</p>"


def _pick(history: dict, prefix: str, suffix: str) -> dict:
    return {n[len(prefix):-len(suffix) - 1] or n: p for n, p in history.items()
            if n.startswith(prefix) and n.endswith("." + suffix)}


def overview(v: dict) -> str:
    st, h = v["status"], v["history"]
    rel = st.get("release") or {}
    node = st.get("node") or {}
    parts = [f'<section class="summary status-{_t(st["status"])}"><h2 id="overall">{_t(st["status"])}</h2>'
             f'<p id="summary">{_t(st["summary"])}</p>'
             f'<p>release <strong id="release">{_t(rel.get("id"))}</strong> {_t(rel.get("version"))} '
             f'since {_t(rel.get("since"))} · appliance {_t(st["appliance_version"])}</p>'
             f'<p id="node">node <strong>{_t(node.get("hostname"))}</strong> · {_t(node.get("cpu_count"))} CPUs · '
             f'memory {_mib(node.get("memory_available_mib"))} free of {_mib(node.get("memory_total_mib"))} · '
             f'up {_dur(node.get("uptime_s"))}</p></section>']
    parts.append("<h2>Problems</h2>" + table("problems", ["severity", "subject", "problem", "fix"], [
        [f'<span class="sev-{_t(p["severity"])}">{_t(p["severity"])}</span>', _t(p["subject"]), _t(p["message"]),
         f"<code>{_t(p['fix'])}</code>"] for p in st.get("problems", [])], "no problems"))
    parts.append("<h2>Accelerators</h2>" + table("accelerators", [
        "device", "model", "memory used / total", "utilisation", "temperature", "power", "health", "services"], [
        [f"{_t(a['vendor'])}:{_t(a['index'])}", _t(a["model"]),
         f"{_mib(a.get('memory_used_mib'))} / {_mib(a.get('memory_total_mib'))}",
         "" if a.get("utilization_pct") is None else f"{a['utilization_pct']:.0f} %",
         "" if a.get("temperature_c") is None else f"{a['temperature_c']:.0f} °C",
         "" if a.get("power_w") is None else f"{a['power_w']:.0f} W", _t(a["health"]),
         _t(", ".join(a.get("services") or []))] for a in st.get("accelerators", [])], "no accelerators (CPU only)"))
    charts = []
    if st.get("accelerators"):
        charts += [chart("chart-acc-memory", "Accelerator memory used", _pick(h, "acc.", "memory_used_mib"), " MiB"),
                   chart("chart-acc-util", "Accelerator utilisation", _pick(h, "acc.", "utilization_pct"), " %",
                         y_range=[0, 100])]
    charts += [chart("chart-node-cpu", "Host CPU busy", {n: p for n, p in h.items() if n == "node.cpu_pct"}, " %",
                     y_range=[0, 100]),
               chart("chart-node-memory", "Host memory used",
                     {n: p for n, p in h.items() if n == "node.memory_used_mib"}, " MiB"),
               chart("chart-services", "Services up (1) / down (0)", _pick(h, "svc.", "up"), y_range=[-0.05, 1.05]),
              chart("chart-requests", "Gateway requests (cumulative)",
                    {n: p for n, p in h.items() if n in ("gw.requests", "gw.denied")})]
    parts.append('<h2>History</h2>' + windows(v) + '<div class="charts">' + "".join(charts) + "</div>")
    parts.append("<h2>Services</h2>" + table("services", [
        "service", "kind", "state", "health", "uptime", "restarts", "repairs", "endpoint", "note"], [
        [f'<span class="{"ok" if s["ok"] else "bad"}">{_t(s["name"])}</span>', _t(s.get("kind")), _t(s["state"]),
         _t(s.get("health") or "-"), _dur(s.get("uptime_s")), _t(s.get("restarts")), _t(s.get("repairs")),
         _t(s.get("endpoint")), _t(s.get("note"))] for s in st.get("services", [])], "no services"))
    up = st.get("last_upgrade")
    parts.append("<h2>Last upgrade</h2>" + (
        f'<p id="last-upgrade">{_t(up["kind"])} {_t(up.get("from_version"))} → {_t(up.get("to_version"))}: '
        f'{_t(up["status"])} ({_t(up["step"])}) at {_t(up["updated_at"])} {_t(up.get("error"))}</p>'
        if up else '<p id="last-upgrade">none recorded</p>'))
    return "".join(parts)


def models(v: dict) -> str:
    parts = ["<h2>Served models</h2>" + table("served", [
        "name", "model", "engine", "service", "devices", "memory per device", "precision", "ready", "weights",
        "verified"], [
        [_t(m["name"]), _t(m.get("model")), _t(m.get("engine")), _t(m["service"]), _t(", ".join(m["devices"])),
         _mib(m.get("memory_mib_per_device")), _t(m.get("precision")), "yes" if m["ready"] else "no",
         _t(m.get("weights")),
         _t(m.get("weights_verified_at"))] for m in v["served"]], "nothing served")]
    parts.append("<h2>Engines</h2>" + table("engines", ["service", "state", "health", "image", "devices", "uptime"], [
        [_t(s["name"]), _t(s["state"]), _t(s.get("health")), f"<code>{_t(s.get('image'))}</code>",
         _t(", ".join(s.get("devices") or [])), _dur(s.get("uptime_s"))] for s in v["services"]]))
    st = v["store"]
    if "error" in st:
        parts.append(f'<h2>Model store</h2><p class="bad">{_t(st["error"])}</p>')
    else:
        parts.append("<h2>Model store</h2>" + table("store", [
            "model", "precision", "layout", "size", "files", "imported", "verified", "used by"], [
            [_t(m["model"]), _t(m["precision"]), _t(m["layout"]), _mib(m["size_bytes"] // (1 << 20)), _t(m["files"]),
             _t(m["imported_at"]), _t(m.get("verified_at") or "never"), _t(", ".join(m["used_by"]))]
            for m in st.get("models", [])], "no weights imported (the built-in models ship with the box)"))
    h, usage = v["history"], v.get("usage") or {}
    parts.append("<h2>Usage per model</h2>" + table("model-usage", [
        "model", "requests", "prompt tokens", "completion tokens", "requests today", "tokens today", "last used"], [
        [_t(name), _t(u["requests"]), _t(u["prompt_tokens"]), _t(u["completion_tokens"]), _t(u["requests_today"]),
         _t(u["tokens_today"]), _ts(u.get("last_used_at"))] for name, u in sorted(usage.items())],
        "no requests yet"))
    parts.append("<h2>Traffic</h2>" + windows(v) + '<div class="charts">' + chart(
        "chart-model-requests", "Requests per second, per model",
        {n[len("gw.model."):-len(".requests")]: rate(p) for n, p in h.items()
         if n.startswith("gw.model.") and n.endswith(".requests")}) + chart(
        "chart-model-tokens", "Tokens per second, per model",
        {n[len("gw.model."):-len(".tokens")]: rate(p) for n, p in h.items()
         if n.startswith("gw.model.") and n.endswith(".tokens")}) + "</div>")
    return "".join(parts)


def keys(v: dict) -> str:
    admin = v.get("role") == "admin"
    form = ('<h2>Create a key</h2><form id="create-key" class="inline">'
            '<label>name <input name="name" required maxlength="64" '
            'pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}"></label>'
            '<label>models <input name="models" placeholder="all (or a,b)"></label>'
            '<label>expires <input name="expires" placeholder="never (or 30d)"></label>'
            '<label>requests/min <input name="rpm" type="number" min="1"></label>'
            '<label>tokens/day <input name="tokens_per_day" type="number" min="1"></label>'
            '<button type="submit">Create</button></form>'
            '<div id="new-key" class="notice" hidden><p>Copy the key now; it is shown only once:</p>'
            '<code id="new-key-value"></code></div>')
    rows = []
    for k in v["keys"]:
        u = k["usage"]
        action = (f'<button class="revoke danger" data-name="{_t(k["name"])}">Revoke</button>'
                  if k["status"] == "active" else "")
        rows.append([_t(k["name"]), f"<code>{_t(k['key_id'])}</code>", _t(k["owner"]),
                     f'<span class="key-{_t(k["status"])}">{_t(k["status"])}</span>',
                     _t(", ".join(k["models"]) or "all"), _t(k.get("rpm") or "-"), _t(k.get("tokens_per_day") or "-"),
                     _ts(k.get("expires_at")) or "never", _t(u["requests"]),
                     _t(u["prompt_tokens"] + u["completion_tokens"]), _t(u["denied"]),
                     _ts(u.get("last_used_at")), action])
    parts = [form, '<h2>Keys</h2><p><a href="/api/keys.csv" id="export-csv">Export usage as CSV</a> · '
                   '<a href="/api/usage-daily.csv" id="export-daily-csv">per day (last 7 days) as CSV</a></p>',
             table("keys", ["name", "id", "owner", "status", "models", "rpm", "tokens/day", "expires", "requests",
                            "tokens", "denied", "last used", ""], rows, "no keys")]
    series, per_user = {}, {}
    for n, p in v["history"].items():
        if n.startswith("gw.user.") and n.endswith(".requests"):
            per_user[n[len("gw.user."):-len(".requests")]] = p
        elif n.endswith(".requests"):
            key_id = n.split(".")[2]
            name = next((k["name"] for k in v["keys"] if k["key_id"] == key_id), key_id)
            series[name] = p
    parts.append(windows(v) + '<div class="charts">' + chart(
        "chart-key-requests", "Requests per minute, per key", {n: rate(p, 60.0) for n, p in series.items()})
        + chart("chart-user-requests", "Requests per minute, per user (through the apps)",
                {n: rate(p, 60.0) for n, p in per_user.items()}) + "</div>")
    if admin:
        parts.append("<h2>Users</h2>" + table("users", ["name", "role", "requests", "tokens"], [
            [_t(u["name"]), _t(u["role"]), _t(u["usage"]["requests"]),
             _t(u["usage"]["prompt_tokens"] + u["usage"]["completion_tokens"])]
            for u in v.get("users", [])], "no users"))
    return "".join(parts)


def operation(op: dict | None) -> str:
    """A long change started from the console (rollback, serve) and its progress lines."""
    if not op:
        return ""
    what = {"rollback": "Rollback", "serve": f"Serving {op.get('subject') or ''}".strip()}.get(op["kind"], op["kind"])
    done = {"done": "finished", "failed": "failed"}.get(op["state"], "running")
    return (f'<div id="operation" data-kind="{_t(op["kind"])}" data-state="{_t(op["state"])}"><h3>{_t(what)} by '
            f'{_t(op["user"])}: {done}{(" — " + _t(op["error"])) if op.get("error") else ""}</h3>'
            f'<pre class="log">{_t(chr(10).join(op["lines"]))}</pre></div>')


def training(v: dict) -> str:
    rows = []
    busy = bool(v.get("operation")) and v["operation"]["state"] == "running"
    for j in v["jobs"]:
        p = j.get("progress") or {}
        pct = f"{100.0 * p['step'] / p['total_steps']:.0f} %" if p.get("step") and p.get("total_steps") else ""
        if j["status"] in ("pending", "running"):
            action = f'<button class="cancel danger" data-id="{_t(j["id"])}">Cancel</button>'
        elif j.get("served_by"):
            action = f'served by <code>{_t(j["served_by"])}</code>'
        elif j.get("servable") and not busy:
            action = (f'<button class="serve" data-id="{_t(j["id"])}" data-model="{_t(j["output_model"])}">'
                      f'Serve</button>')
        else:
            action = ""
        rows.append([f"<code>{_t(j['id'])}</code>", _t(j["model"]), _t(j["method"]), _t(j["status"]), pct,
                     _t(p.get("loss")), _t(j["output_model"]), _ts(j["created_ts"]), action])
    parts = ["<h2>Fine-tuning jobs</h2>" + operation(v.get("operation")) + table(
        "jobs", ["job", "model", "method", "status", "progress", "loss", "output model", "created", ""], rows,
        "no jobs (appliance train submit MODEL DATASET)")]
    for j in v["jobs"]:
        if "log_tail" not in j and not j.get("loss_history"):
            continue
        parts.append(f'<section class="job" id="job-{_t(j["id"])}"><h2>Job <code>{_t(j["id"])}</code> '
                     f'({_t(j["status"])})</h2><div class="charts">'
                     + chart(f"chart-loss-{_t(j['id'])}", "Training loss", {"loss": j.get("loss_history") or []})
                     + f'</div><h3>Log (last lines)</h3><pre class="log">{_t(j.get("log_tail") or "")}</pre>'
                     + ("<p>Finished: <b>Serve</b> above (or <code>appliance serve " + _t(j["id"]) + "</code>) "
                        "serves it behind the gateway.</p>" if j.get("servable") else "")
                     + "</section>")
    return "".join(parts)


def changes(c: dict) -> str:
    """One release's changes against the one before it, as short lines."""
    if c.get("against") is None:
        return "first install" + (f" ({_t(c.get('to_version'))})" if c.get("to_version") else "")
    out = []
    if c.get("from_version") != c.get("to_version"):
        out.append(f"version {_t(c.get('from_version') or '?')} → {_t(c.get('to_version') or '?')}")
    out += [f"+ {_t(n)}" for n in c.get("added", [])]
    out += [f"− {_t(n)}" for n in c.get("removed", [])]
    out += [f"{_t(i['service'])}: image <code>{_t(i['from_image'])}</code> → <code>{_t(i['to_image'])}</code>"
            for i in c.get("images", [])]
    out += [f"{_t(n)}: reconfigured" for n in c.get("reconfigured", [])]
    out += [f"serves {_t(m)}" for m in c.get("models_added", [])]
    out += [f"stops serving {_t(m)}" for m in c.get("models_removed", [])]
    return "<br>".join(out) if out else f"same as release {_t(c['against'])}"


def releases(v: dict) -> str:
    rows = [[_t(r["id"]), _t(r["status"]), _t(r["source"]), _t(r.get("version")), _ts(r["created_ts"]),
             _t(", ".join(r["services"])), changes(r.get("changes") or {}), _t(r.get("note"))]
            for r in v["releases"]]
    ev = [[_ts(e["ts"]), _t(e["kind"]), _t(e.get("service")), _t(e["message"])] for e in v["events"]]
    rb, op = v.get("rollback") or {}, v.get("operation")
    if op and op["state"] == "running":
        action = (f'<p id="rollback-state" class="notice">{_t(op["kind"]).capitalize()} started by '
                  f'{_t(op["user"])} is running&hellip;</p>')
    elif "to" in rb:
        action = (f'<p>Rollback returns from {_t(rb["from"])} to {_t(rb["to"])} (blue/green, health-gated; the '
                  f'same as <code>appliance rollback</code>). <button id="rollback" class="danger" '
                  f'data-from="{_t(rb["from"])}" data-to="{_t(rb["to"])}">Roll back</button></p>')
    else:
        action = f'<p>Rollback: {_t(rb.get("unavailable"))}</p>'
    action += operation(op)
    columns = ["release", "status", "source", "version", "created", "services", "changes", "note"]
    return ("<h2>Releases</h2>" + action + table("releases", columns, rows, "nothing installed")
            + "<h2>Recent changes</h2>" + table("events", ["when", "kind", "service", "what"], ev, "no events"))


RENDERERS = {"overview": overview, "models": models, "keys": keys, "training": training, "releases": releases}


def page(name: str, view: dict, who: dict, *, fragment: bool = False, asset_version: str = "") -> str:
    main = f'<main id="page" data-page="{escape(name)}" data-refresh-s="10">{RENDERERS[name](view)}</main>'
    if fragment:
        return main
    admin = who.get("role") == "admin"
    nav = "".join(f'<a href="{href}" class="{"here" if key == name else ""}" id="nav-{key}">{escape(label)}</a>'
                  for key, href, label in NAV if admin or key == "keys")
    v = escape(asset_version)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(dict((k, t) for k, _, t in NAV)[name])} · appliance console</title>'
            f'<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            f'<link rel="stylesheet" href="/static/console.css?v={v}"></head><body>'
            f'<header><strong>appliance</strong><nav>{nav}</nav>'
            f'<span id="who" data-user="{_t(who.get("user"))}" data-role="{_t(who.get("role"))}">'
            f'{_t(who.get("user"))} ({_t(who.get("role"))})</span></header>{main}'
            f'<script src="/static/plotly.min.js?v={v}" defer></script>'
            f'<script src="/static/console.js?v={v}" defer></script></body></html>')


def forbidden(who: dict) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not allowed</title>'
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml"><link rel="stylesheet" '
            'href="/static/console.css"></head><body><main id="page" data-page="forbidden">'
            f'<h1>Not allowed</h1><p>Signed in as {_t(who.get("user"))} ({_t(who.get("role"))}): this page is for '
            'administrators. <a href="/keys">Your keys and usage</a>.</p></main></body></html>')
