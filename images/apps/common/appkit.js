// What the sample apps' pages share (appkit.py serves this file at /appkit.js; no dependencies:
// the box serves its pages offline). appkit.api() calls the app's own API and throws an
// appkit.ApiError carrying the backend's plain-words message and its "reason"; appkit.busy()
// disables the controls while a request is in flight; appkit.errorText() is what a page shows
// for an error; appkit.evaluationNotice() says when the box runs a small evaluation model.
// Text only ever goes in with textContent: nothing here is parsed as HTML.
// Sign-in: every API call needs the box's session cookie (one login for the whole box, at the
// gateway); an answer 401 {"reason": "sign_in_required", "login_url"} sends the browser to that
// sign-in page with `next` set to this page, so it comes back here once signed in.
"use strict";

const appkit = (() => {
  class ApiError extends Error {
    constructor(message, status, reason) {
      super(message);
      this.status = status;
      this.reason = reason || "";
    }
  }

  // Go to the gateway's sign-in page (it comes back to this page); true when the answer asked for it.
  function signInIfNeeded(status, data) {
    if (status !== 401 || !data || data.reason !== "sign_in_required" || !data.login_url) return false;
    const url = new URL(data.login_url, location.href);
    url.searchParams.set("next", location.href);
    document.body.dataset.status = "signing-in";
    location.assign(url.toString());
    return true;
  }

  async function request(path, options) {
    try {
      return await fetch(path, {credentials: "same-origin", ...(options || {})});
    } catch (err) {
      throw new ApiError("The app does not answer. Check the network, or ask an administrator to check " +
                         "`appliance status`.", 0, "app_unreachable");
    }
  }

  async function api(path, options) {
    const resp = await request(path, options);
    let data = null;
    try { data = await resp.json(); } catch (err) { /* not JSON: e.g. a proxy's error page */ }
    if (signInIfNeeded(resp.status, data)) throw new ApiError("Signing in\u2026", 401, "sign_in_required");
    if (!resp.ok || data === null) {
      const message = (data && data.error) || `the app answered HTTP ${resp.status} ${resp.statusText}`.trim();
      throw new ApiError(message, resp.status, data && data.reason);
    }
    return data;
  }

  // A text resource of the app (a profile file): its text, or an ApiError (sign-in handled as in api()).
  async function text(path) {
    const resp = await request(path);
    const body = await resp.text();
    if (resp.status === 401) {
      let data = null;
      try { data = JSON.parse(body); } catch (err) { /* not JSON */ }
      if (signInIfNeeded(resp.status, data)) throw new ApiError("Signing in\u2026", 401, "sign_in_required");
    }
    if (!resp.ok) throw new ApiError(`the app answered HTTP ${resp.status}`, resp.status, "");
    return body;
  }

  function errorText(err) {
    const plain = ["model_unavailable", "app_unreachable", "auth_unavailable", "sign_in_required"];
    if (err && plain.includes(err.reason)) return err.message;
    return "Sorry, something went wrong: " + (err && err.message ? err.message : String(err));
  }

  // Disable (or re-enable) the given controls; the body says data-busy="1" meanwhile.
  function busy(on, ...controls) {
    for (const el of controls) if (el) el.disabled = on;
    if (on) document.body.dataset.busy = "1";
    else delete document.body.dataset.busy;
  }

  // The "Thinking ..." placeholder: an element of class "thinking" with role=status.
  function thinking(el, text) {
    el.textContent = text || "Thinking\u2026";
    el.classList.add("thinking");
    el.setAttribute("role", "status");
    return el;
  }

  // A failed answer shown in place: the plain-words text, class "error" (+ "unavailable" when the
  // model is), data-reason for scripts and tests, and the page's data-status="error".
  function showError(el, err) {
    el.classList.remove("thinking");
    el.textContent = errorText(err);
    el.classList.add("error");
    if (err && err.reason === "model_unavailable") el.classList.add("unavailable");
    el.dataset.reason = (err && err.reason) || "";
    document.body.dataset.status = "error";
    return el;
  }

  // The request is over (answered or failed): the answer area is no longer busy, controls re-enabled.
  function settle(el, ...controls) {
    if (el) el.removeAttribute("aria-busy");
    busy(false, ...controls);
  }

  function evaluationNotice(info) {
    const models = (info && info.evaluation_models) || [];
    let el = document.getElementById("evaluation-notice");
    if (!models.length) {
      if (el) el.remove();
      return null;
    }
    if (!el) {
      el = document.createElement("p");
      el.id = "evaluation-notice";
      el.className = "evaluation-notice";
      el.setAttribute("role", "note");
      const header = document.querySelector("header");
      if (header) header.after(el); else document.body.prepend(el);
    }
    const one = models.length === 1;
    el.textContent = (one ? "This box runs a small evaluation model" : "This box runs small evaluation models") +
      ` (${models.join(", ")}): answers can be simple or wrong. Your administrator can serve ` +
      (one ? "a bigger model." : "bigger models.");
    el.dataset.models = models.join(",");
    return el;
  }

  const style = document.createElement("style");
  style.textContent =
    ".evaluation-notice { margin: 0; padding: 8px 20px; background: #fef3c7; color: #713f12; font-size: 13px; " +
    "border-bottom: 1px solid #fcd34d; }\n" +
    ".thinking { font-style: italic; opacity: .75; }\n" +
    ".thinking::after { content: ''; display: inline-block; width: .8em; height: .8em; margin-left: .5em; " +
    "border: 2px solid currentColor; border-right-color: transparent; border-radius: 50%; " +
    "animation: appkit-spin .8s linear infinite; vertical-align: -.1em; }\n" +
    "@keyframes appkit-spin { to { transform: rotate(360deg); } }\n" +
    "button:disabled, input:disabled, textarea:disabled { opacity: .6; cursor: not-allowed; }\n";
  document.head.appendChild(style);

  return {ApiError, api, text, signInIfNeeded, errorText, busy, thinking, showError, settle, evaluationNotice};
})();
