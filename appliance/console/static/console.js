// The console's pages: charts (plotly.js, served by the box), live refresh, and the few changes.
// Without JavaScript every page still shows its tables (rendered on the server).
"use strict";
(function () {
  const REFRESH_MIN_S = 5;

  function drawCharts(root) {
    if (!window.Plotly) return; // the tables and last values stay
    root.querySelectorAll("figure.chart").forEach(function (fig) {
      const block = fig.querySelector("script.chart-data");
      const plot = fig.querySelector(".plot");
      if (!block || !plot) return;
      let data;
      try { data = JSON.parse(block.textContent); } catch (e) { return; }
      const traces = Object.keys(data.series).map(function (name) {
        const pts = data.series[name];
        return { name: name, mode: pts.length > 1 ? "lines" : "markers", type: "scatter",
                 x: pts.map(function (p) { return new Date(p[0] * 1000); }),
                 y: pts.map(function (p) { return p[1]; }) };
      });
      if (!traces.length) return;
      fig.classList.add("drawn");
      window.Plotly.react(plot, traces, {
        margin: { l: 48, r: 12, t: 8, b: 32 }, height: 220, showlegend: true,
        legend: { orientation: "h", y: -0.25 },
        yaxis: data.y_range ? { ticksuffix: data.unit || "", range: data.y_range } : { ticksuffix: data.unit || "" },
        paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"
      }, { displayModeBar: false, responsive: true, staticPlot: false });
    });
  }

  function notice(text, kind) {
    let box = document.getElementById("notice");
    if (!box) {
      box = document.createElement("div");
      box.id = "notice";
      document.body.insertBefore(box, document.getElementById("page"));
    }
    box.className = "notice " + (kind || "");
    box.textContent = "";
    return box;
  }

  async function send(url, body) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body || {})
    });
    let doc = {};
    try { doc = await resp.json(); } catch (e) { doc = { error: "HTTP " + resp.status }; }
    if (!resp.ok) throw new Error(doc.error || ("HTTP " + resp.status));
    return doc;
  }

  function bind(root) {
    const form = root.querySelector("#create-key");
    if (form) {
      form.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        const f = new FormData(form);
        const body = {};
        f.forEach(function (v, k) { if (String(v).trim() !== "") body[k] = String(v).trim(); });
        try {
          const key = await send("/api/keys", body);
          const box = notice("", "ok");
          const p = document.createElement("p");
          p.textContent = "Key " + key.name + " created. Copy it now; it is shown only once:";
          const code = document.createElement("code");
          code.id = "new-key-value";
          code.textContent = key.key;
          box.appendChild(p);
          box.appendChild(code);
          form.reset();
          refresh();
        } catch (e) { notice("", "bad").textContent = "Not created: " + e.message; }
      });
    }
    // destructive actions: ask first, then POST, then say what happened
    function confirmed(selector, attr, question, url, done, failed) {
      root.querySelectorAll(selector).forEach(function (b) {
        b.addEventListener("click", async function () {
          const name = b.getAttribute(attr);
          if (!window.confirm(question(name))) return;
          try { await send(url(name)); notice("", "ok").textContent = done(name); refresh(); }
          catch (e) { notice("", "bad").textContent = failed + e.message; }
        });
      });
    }
    confirmed("button.revoke", "data-name",
              function (n) { return "Revoke key " + n + "? Clients using it are refused from then on."; },
              function (n) { return "/api/keys/" + encodeURIComponent(n) + "/revoke"; },
              function (n) { return "Key " + n + " revoked."; }, "Not revoked: ");
    confirmed("button.cancel", "data-id",
              function (n) { return "Cancel training job " + n + "?"; },
              function (n) { return "/api/jobs/" + encodeURIComponent(n) + "/cancel"; },
              function (n) { return "Job " + n + " cancelled."; }, "Not cancelled: ");
    root.querySelectorAll("button.serve").forEach(function (b) {
      b.addEventListener("click", async function () {
        const id = b.getAttribute("data-id");
        if (!window.confirm("Serve " + b.getAttribute("data-model") + " (job " + id + ") behind the gateway? " +
                            "A new service starts beside what runs; health-gated.")) return;
        try { await send("/api/jobs/" + encodeURIComponent(id) + "/serve", { confirm: true });
              notice("", "ok").textContent = "Serving started; its progress shows below."; refresh(); }
        catch (e) { notice("", "bad").textContent = "Not started: " + e.message; }
      });
    });
    const rb = root.querySelector("#rollback");
    if (rb) {
      rb.addEventListener("click", async function () {
        const text = "Roll back from " + rb.getAttribute("data-from") + " to " + rb.getAttribute("data-to") +
          "? The services are replaced blue/green behind health gates.";
        if (!window.confirm(text)) return;
        try { await send("/api/releases/rollback", { confirm: true });
              notice("", "ok").textContent = "Rollback started; its progress shows below."; refresh(); }
        catch (e) { notice("", "bad").textContent = "Not started: " + e.message; }
      });
    }
  }

  let busy = false;
  async function refresh() {
    const page = document.getElementById("page");
    if (busy || !page) return;
    const active = document.activeElement;
    if (active && page.contains(active) && active.tagName === "INPUT") return; // typing: later
    busy = true;
    try {
      const query = new URLSearchParams(window.location.search);
      query.set("fragment", "1");
      const resp = await fetch(window.location.pathname + "?" + query.toString(), {
        credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (resp.status === 401 || resp.redirected) { window.location.reload(); return; }
      if (!resp.ok) return;
      const tpl = document.createElement("template");
      tpl.innerHTML = (await resp.text()).trim();
      const fresh = tpl.content.firstElementChild;
      if (fresh && fresh.id === "page") {
        page.replaceWith(fresh);
        bind(fresh);
        drawCharts(fresh);
        document.body.setAttribute("data-refreshed", String(Date.now()));
      }
    } catch (e) { /* offline for a moment: the next tick tries again */ }
    finally { busy = false; }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const page = document.getElementById("page");
    if (!page) return;
    bind(page);
    drawCharts(page);
    const every = Math.max(REFRESH_MIN_S, Number(page.getAttribute("data-refresh-s")) || 10);
    window.setInterval(refresh, every * 1000);
  });
})();
