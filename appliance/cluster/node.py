"""A node's side of the cluster bring-up: the files the controller copied before ``appliance init``.

A **worker** gets one secret per engine it serves (``--cluster-secrets DIR``, a file per
service): each becomes the engine's kept secret (:mod:`appliance.runtime.engine_keys`), so the
head's gateway -- which got the same secrets -- is the only client its published engines
answer. The **head** gets the workers' engines (``--cluster-head FILE``): where each is, what
it serves, its secret. The secrets go into the head's engine-secret files under the engine's
remote name; the rest becomes the site's ``remote_engines`` (recorded, shown by ``config
show``, never a secret); the file is rewritten without the secrets.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from appliance.errors import UsageError
from appliance.runtime.models import RemoteEngine

log = logging.getLogger("appliance.cluster.node")
MAX_FILE_BYTES = 1 << 20
MAX_ENGINES = 256
FORMAT = "appliance-remote-engines/1"


def import_worker_secrets(directory: str | os.PathLike) -> list[str]:
    """Each ``DIR/<service>`` file becomes that engine's secret; the files are removed. Returns
    the services."""
    from appliance.runtime.engine_keys import set_engine_secret

    d = Path(directory)
    if not d.is_dir():
        raise UsageError("the cluster secrets directory does not exist", where=str(d),
                         fix="run `appliance init --inventory FILE` on the controller (it copies them)")
    done = []
    for f in sorted(d.iterdir()):
        if not f.is_file() or f.stat().st_size > 4096:
            continue
        secret = f.read_text(encoding="utf-8").strip()
        if not secret:
            continue
        set_engine_secret(f.name, secret)
        f.unlink()
        done.append(f.name)
    return done


def import_remote_engines(path: str | os.PathLike) -> list[RemoteEngine]:
    """The workers' engines for the head's gateway, from the controller's file (see module doc)."""
    from appliance.atomic import write_atomic
    from appliance.runtime.engine_keys import set_engine_secret

    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"the remote engines file is larger than {MAX_FILE_BYTES:,} bytes", where=str(p),
                             fix="run `appliance init --inventory FILE` on the controller again")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the remote engines file: {exc.strerror or exc}", where=str(p),
                         fix="run `appliance init --inventory FILE` on the controller (it copies it)") from None
    except ValueError:
        raise UsageError("the remote engines file is not JSON", where=str(p),
                         fix="run `appliance init --inventory FILE` on the controller again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("engines"), list):
        raise UsageError(f"not a remote engines file (format {FORMAT})", where=str(p),
                         fix="run `appliance init --inventory FILE` on the controller again")
    if len(doc["engines"]) > MAX_ENGINES:
        raise UsageError(f"more than {MAX_ENGINES} remote engines", where=str(p), fix="split the cluster")
    out: list[RemoteEngine] = []
    for i, e in enumerate(doc["engines"]):
        try:
            engine = RemoteEngine(node=e["node"], service=e["service"], key=e["key"], url=e["url"],
                                  served_models=list(e["served_models"]), role=e.get("role") or "")
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"engine {i} of the remote engines file is malformed: {exc}", where=str(p),
                             fix="run `appliance init --inventory FILE` on the controller again") from None
        if e.get("secret"):
            set_engine_secret(engine.key, str(e["secret"]))
        out.append(engine)
    write_atomic(p, json.dumps({"format": FORMAT, "engines": [r.model_dump() for r in out]}, indent=1) + "\n",
                 mode=0o600)
    return out
