"""Argument contracts: what each engine version accepts, and the check every planned command meets.

Why: an engine refuses to start on a flag its version removed (vLLM ``--task`` since 0.13.0)
or on a missing companion setting (MindIE ``allowAllZeroIpListening``, TGI input < total
tokens), and on a real box that is found only when the service never turns healthy. The
contract (``images/catalog/contracts.yaml``) writes those facts down as data with a source
per rule; the planner takes version-dependent role arguments from it (:func:`role_args`) and
:func:`check` holds a rendered command to it, so a test can check every command the planner
can produce without the hardware.

Versions are the image's ``contract_version`` (its upstream engine version; a vendor fork
names the vLLM it is based on). Ranges are ``[since, until)``: ``removed``/``until`` is the
first version that no longer has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from appliance.catalog.schema import ContractRule, EngineContract, VersionedArgs
from appliance.catalog.versions import compare


@dataclass(frozen=True)
class Violation:
    """One way a planned command breaks its engine's contract (``rule`` names which)."""

    service: str
    rule: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.service}: {self.message}{where}"


@dataclass(frozen=True)
class Command:
    """What the check looks at: the rendered service, independent of the planner's models."""

    name: str
    role: str
    backend: str
    entrypoint: list[str]
    args: list[str]
    env: dict[str, str]
    values: dict[str, int]                   # planned numbers: context, context_total, concurrency, tp
    config: dict[str, Any] | None = None     # dotted key -> value written into the config file
    shares_devices: bool = False


def in_window(version: str, since: str | None, until: str | None) -> bool:
    """``since <= version < until`` (either end open when None)."""
    if since is not None and compare(version, since) < 0:
        return False
    return until is None or compare(version, until) < 0


def role_args(contract: EngineContract | None, version: str, role: str) -> list[str] | None:
    """The contract's arguments for ``role`` at ``version``; None when the contract has no entry
    for the role (the engine's own ``role_args`` apply)."""
    if contract is None or role not in contract.role_args:
        return None
    options: list[VersionedArgs] = contract.role_args[role]  # type: ignore[index]
    for entry in options:
        if in_window(version, entry.since, entry.until):
            return list(entry.args)
    return []


def parse_flags(args: list[str], contract: EngineContract) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(flag, value) pairs in order, and the positional arguments.

    ``--flag=value`` and ``--flag value`` both count; whether a flag takes a value comes from
    the contract (an unknown flag is assumed to take one, so its value is not read as a flag).
    """
    pairs: list[tuple[str, str | None]] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            name, eq, inline = token.partition("=")
            rule = contract.flags.get(name)
            if eq:
                pairs.append((name, inline))
            elif rule is not None and not rule.value:
                pairs.append((name, None))
            elif i + 1 < len(args):
                pairs.append((name, args[i + 1]))
                i += 1
            else:
                pairs.append((name, None))
        else:
            positional.append(token)
        i += 1
    return pairs, positional


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _applies(rule: ContractRule, version: str, cmd: Command) -> bool:
    return (in_window(version, rule.since, rule.until) and (rule.roles is None or cmd.role in rule.roles)
            and (rule.backends is None or cmd.backend in rule.backends))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def check(cmd: Command, contract: EngineContract, version: str) -> list[Violation]:
    """Every way ``cmd`` breaks ``contract`` at engine ``version`` (empty: it is one the engine accepts)."""
    out: list[Violation] = []
    flags: dict[str, str | None] = {}
    if contract.command == "flags":
        pairs, positional = parse_flags(cmd.args, contract)
        if len(positional) != contract.positional:
            out.append(Violation(cmd.name, "positional", f"{len(positional)} positional argument(s) "
                                 f"{positional!r}; the engine takes {contract.positional}"))
        for name, value in pairs:
            if name in flags:
                out.append(Violation(cmd.name, "duplicate", f"{name} is given twice"))
            flags[name] = value
            rule = contract.flags.get(name)
            if rule is None:
                out.append(Violation(cmd.name, "unknown_flag", f"{name} is not a flag of {contract.name}"))
                continue
            if not in_window(version, rule.since, rule.removed):
                when = (f"removed in {rule.removed}" if rule.removed and compare(version, rule.removed) >= 0
                        else f"added in {rule.since}")
                instead = f"; use {rule.replaced_by}" if rule.replaced_by else ""
                out.append(Violation(cmd.name, "flag_version", f"{name} is {when}; this image has "
                                     f"{contract.name} {version}{instead}", rule.source))
            elif rule.deprecated and compare(version, rule.deprecated) >= 0:
                instead = f"; use {rule.replaced_by}" if rule.replaced_by else ""
                out.append(Violation(cmd.name, "flag_deprecated", f"{name} is deprecated since {rule.deprecated} "
                                     f"(this image has {version}){instead}", rule.source))
    elif cmd.config is None:
        out.append(Violation(cmd.name, "config", f"{contract.name} reads its settings from a config file; "
                             "the command sets none"))
    for rule in contract.rules:
        if _applies(rule, version, cmd):
            out += _check_rule(cmd, rule, flags)
    return out


def _check_rule(cmd: Command, rule: ContractRule, flags: dict[str, str | None]) -> list[Violation]:
    def bad(message: str) -> list[Violation]:
        return [Violation(cmd.name, rule.kind, f"{message}: {rule.why}", rule.source)]

    if rule.kind == "flag_equals":
        if flags.get(rule.flag) != rule.equals:  # type: ignore[arg-type]
            return bad(f"needs {rule.flag} {rule.equals}")
    elif rule.kind == "flag_less_than":
        a, b = _int(flags.get(rule.flag)), _int(flags.get(rule.than))  # type: ignore[arg-type]
        if a is None or b is None or not a < b:
            return bad(f"needs {rule.flag} ({a}) < {rule.than} ({b})")
    elif rule.kind == "flag_at_least":
        have, need = _int(flags.get(rule.flag)), cmd.values.get(rule.field or "")  # type: ignore[arg-type]
        if have is None or need is None or have < need:
            return bad(f"needs {rule.flag} >= planned {rule.field} ({need}); has {have}")
    elif rule.kind == "entrypoint":
        if list(cmd.entrypoint[:len(rule.entrypoint or [])]) != list(rule.entrypoint or []):
            return bad(f"needs the entrypoint {' '.join(rule.entrypoint or [])}")
    elif rule.kind == "config_set":
        conf = cmd.config or {}
        if all(conf.get(k) == v for k, v in rule.when.items()):
            wrong = [f"{k}={conf.get(k)!r}" for k, v in rule.config.items() if conf.get(k) != v]
            if wrong:
                return bad(f"needs {', '.join(f'{k}={v!r}' for k, v in rule.config.items())} (has {', '.join(wrong)})")
    elif rule.kind == "config_same":
        conf = cmd.config or {}
        values = [conf.get(k) for k in rule.keys]
        if any(v is None for v in values) or len(set(map(repr, values))) != 1:
            return bad(f"needs {' = '.join(rule.keys)} (has {values})")
    elif rule.kind == "env_when_shared":
        if cmd.shares_devices:
            wrong = [k for k, v in rule.env.items() if cmd.env.get(k) != v]
            if wrong:
                return bad(f"shares a device and needs {', '.join(f'{k}={rule.env[k]}' for k in wrong)}")
    return []


# ---- the per-service secret an engine requires ------------------------------------------------
@dataclass(frozen=True)
class KeyInput:
    """How an engine is given the secret every request to it must carry (``Authorization: Bearer``).

    ``file_flag``: a flag naming a file the engine reads the key from (the best: nothing secret in
    its command line or environment); ``file_env``: an environment variable naming that file;
    ``env``: an environment variable holding the key itself; ``flag``: a flag taking the key itself.
    For the last two the runtime reads the mounted key file in a shell at start and ``exec``s the
    engine (:func:`appliance.planner.command.key_launch`), so the key is in no ``docker inspect``
    output -- ``flag`` still puts it in the engine's own command line (``ps`` on the host shows it),
    which is why it is used only where the engine has no other way. ``flag`` and ``file_flag`` are
    flags of the engine's contract (contracts.yaml), so their version window is checked there.
    """

    kind: Literal["file_flag", "file_env", "env", "flag"]
    name: str
    source: str


# Engine service (contracts.yaml's key) -> how it takes its key. An engine absent here has no way to
# require one and is protected by the internal engine network alone:
# * tgi: huggingface/tgi-gaudi launcher/src/main.rs (v2.0.0-v2.0.5, the catalog's images) has no API key;
#   upstream TGI has `--api-key` / env API_KEY since v2.3.0 (launcher/src/main.rs), passed on to the
#   router on its command line -- to be used when a TGI >= 2.3.0 image enters the catalog;
# * mindie: MindIE Service has no bearer key; it authenticates clients with HTTPS and certificates
#   (ServerConfig.httpsEnabled and the tls* files, config_mindie_server_tls_cert.py: hiascend.com MindIE
#   Service docs mindie_service0285 "ServerConfig", mindie_service0163), which the gateway does not speak;
# * tensorrt-llm: trtllm-serve documents no key option
#   (https://nvidia.github.io/TensorRT-LLM/commands/trtllm-serve.html).
KEY_INPUTS: dict[str, KeyInput] = {
    "llama.cpp": KeyInput("file_flag", "--api-key-file", "ggml-org/llama.cpp tools/server/README.md "
                          "(--api-key-file FNAME: path to a file containing API keys); our launcher "
                          "images/engines/llamacpp/main.py takes the same flag"),
    "vllm": KeyInput("env", "VLLM_API_KEY", "vllm-project/vllm vllm/entrypoints/openai/api_server.py "
                     "(`envs.VLLM_API_KEY or args.api_key` since 0.3, `args.api_key or [envs.VLLM_API_KEY]` "
                     "in newer releases; only paths under /v1 are checked, /health stays open; no file option)"),
    "sglang": KeyInput("flag", "--api-key", "sgl-project/sglang python/sglang/srt/server_args.py (--api-key: "
                       "\"Set API key of the server\"; no environment variable, no file); "
                       "srt/utils.py add_api_key_middleware leaves /health open"),
    "demo": KeyInput("file_env", "ENGINE_API_KEY_FILE", "images/demo/engine/main.py (the templated test engine)"),
}


def key_input(service: str | None) -> KeyInput | None:
    """How the engine ``service`` takes its key (None: it cannot require one)."""
    return KEY_INPUTS.get(service or "")
