"""Sample app: the code assistant -- IDE endpoint profiles plus a small coding-help page.

IDE plugins (Continue, Cline, aider, JetBrains AI proxies, ...) speak the OpenAI API, so
the "integration" is a profile pointing them at the gateway with a key of their own. This
app renders those profiles for the models this box serves and offers a page that asks the
chat model coding questions through the gateway with the app's own key.

The profiles never contain a key: each developer creates one with
``appliance keys create --name <dev> --models <model>`` and pastes it in.

Environment (besides appkit's): GATEWAY_PUBLIC_URL (the URL IDEs reach the gateway at,
with or without /v1; default http://127.0.0.1:8080), CHAT_MODEL, COMPLETION_MODEL (autocomplete; default the
chat model).

API: GET /api/info -> {"gateway", "models", "chat_model", "autocomplete_model", "evaluation_models"};
GET /profile/continue.yaml, /profile/continue.json, /profile/openai.env;
POST /api/ask {"prompt", "code"?, "language"?} -> {"answer", "model"}.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# appkit.py: beside main.py in the image (the build copies images/apps/common/ in), in ../common in the source tree
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "common")]
from appkit import Gateway, HTTPError, app_info, base_url, serve  # noqa: E402

GW = Gateway()
KEY_PLACEHOLDER = "<your key: appliance keys create --name YOUR-NAME --models {model}>"
SYSTEM = ("You are a senior software engineer helping a colleague. Answer with correct, minimal code in fenced "
          "blocks and a short explanation. Say so when you are unsure.")
_NON_CHAT = ("embed", "rerank", "bge", "e5-")


def public_url() -> str:
    return base_url(os.environ.get("GATEWAY_PUBLIC_URL", "http://127.0.0.1:8080"))


def chosen_models() -> tuple[str, str, list[str]]:
    models = GW.models()
    chat = GW.pick("CHAT_MODEL", avoid=_NON_CHAT)
    auto = os.environ.get("COMPLETION_MODEL") or chat
    return chat, auto, models


def continue_yaml(chat: str, auto: str) -> str:
    """Continue's config.yaml (schema v1). JSON strings are valid YAML scalars: no escaping bugs."""
    base = json.dumps(public_url() + "/v1")

    def block(model: str, roles: list[str]) -> str:
        return (f"  - name: {json.dumps(model + ' (appliance)')}\n    provider: openai\n"
                f"    model: {json.dumps(model)}\n    apiBase: {base}\n"
                f"    apiKey: {json.dumps(KEY_PLACEHOLDER.format(model=model))}\n"
                f"    roles: [{', '.join(roles)}]\n")

    body = "name: appliance\nversion: 0.0.1\nschema: v1\nmodels:\n"
    if auto == chat:
        return body + block(chat, ["chat", "edit", "apply", "autocomplete"])
    return body + block(chat, ["chat", "edit", "apply"]) + block(auto, ["autocomplete"])


def continue_json(chat: str, auto: str) -> dict:
    def model(name: str) -> dict:
        return {"title": f"{name} (appliance)", "provider": "openai", "model": name,
                "apiBase": public_url() + "/v1", "apiKey": KEY_PLACEHOLDER.format(model=name)}

    return {"models": [model(chat)], "tabAutocompleteModel": model(auto)}


def openai_env(chat: str) -> str:
    return (f"# any OpenAI-compatible tool (aider, Cline, the openai SDK, ...)\n"
            f"OPENAI_BASE_URL={public_url()}/v1\nOPENAI_API_BASE={public_url()}/v1\n"
            f"OPENAI_API_KEY={KEY_PLACEHOLDER.format(model=chat)}\nOPENAI_MODEL={chat}\n")


def api_info(_req):
    chat, auto, models = chosen_models()
    return 200, app_info("code-assistant", "Code assistant", gateway=public_url() + "/v1", models=models,
                         chat_model=chat, autocomplete_model=auto), "application/json"


def profile(req):
    chat, auto, _ = chosen_models()
    name = req.route.rsplit("/", 1)[-1]
    if name == "continue.yaml":
        return 200, continue_yaml(chat, auto).encode(), "text/yaml; charset=utf-8"
    if name == "continue.json":
        return 200, json.dumps(continue_json(chat, auto), indent=2).encode(), "application/json"
    if name == "openai.env":
        return 200, openai_env(chat).encode(), "text/plain; charset=utf-8"
    raise HTTPError(404, f"no profile {name} (continue.yaml, continue.json, openai.env)")


def api_ask(req):
    body = req.json_body()
    prompt = str(body.get("prompt") or "").strip()
    if not prompt:
        raise HTTPError(400, 'send {"prompt": "...", "code": "..." (optional)}')
    code = str(body.get("code") or "")[:20000]
    language = str(body.get("language") or "")[:40]
    content = prompt if not code else f"{prompt}\n\n```{language}\n{code}\n```"
    chat = GW.pick("CHAT_MODEL", avoid=_NON_CHAT)
    answer, raw = GW.chat(chat, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
                          temperature=0.2, max_tokens=1024)
    return 200, {"answer": answer, "model": chat, "usage": raw.get("usage")}, "application/json"


if __name__ == "__main__":
    serve("code-assistant", {("GET", "/api/info"): api_info, ("GET", "/profile/"): profile,
                             ("POST", "/api/ask"): api_ask}, os.path.join(HERE, "static"))
