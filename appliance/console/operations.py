"""Long changes started from the console (a rollback, serving a finished job): one at a time, in
a thread, with progress.

Why not the view worker: both are the deploy pipeline (blue/green behind health gates,
journaled), and can take minutes; the pages must keep answering meanwhile. Each operation runs
the same library calls as its command -- ``appliance rollback --yes``
(:func:`appliance.deploy.requests.run` of :func:`~appliance.deploy.requests.rollback_request`,
after finishing an interrupted upgrade) and ``appliance serve JOB``
(:func:`appliance.deploy.requests.serve`) -- on its own state connection, and keeps its last
progress lines for the page that started it. A second start while one runs is refused (409):
the pipeline's own instance lock would refuse it anyway, and also keeps ``init`` or an upgrade
from running at the same time.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from appliance.errors import ApplianceError

log = logging.getLogger("appliance.console.operations")

MAX_LINES = 200


class Busy(Exception):
    """Another operation is running."""


def _rollback(say) -> dict:
    from appliance.bundle.apply import recover
    from appliance.deploy.requests import rollback_request, run

    recover(say=say)
    res = run(rollback_request(), say=say)
    return {"release": res.release, "from_version": res.from_version, "to_version": res.to_version}


def _serve(ref: str):
    def serve(say) -> dict:
        from appliance.deploy.requests import serve as serve_model

        res = serve_model(ref, say=say)
        return {"release": res.release, "model": res.model, "service": res.service,
                "served_model_name": res.served_model_name, "already_served": res.already_served}
    return serve


class Operations:
    def __init__(self):
        self._lock = threading.Lock()
        self.current: dict | None = None
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict | None:
        with self._lock:
            if self.current is None:
                return None
            return {**self.current, "lines": list(self.current["lines"])}

    def start_rollback(self, user: str, *, record_event) -> dict:
        return self._start("rollback", user, _rollback, record_event, subject=None)

    def start_serve(self, user: str, ref: str, *, record_event) -> dict:
        return self._start("serve", user, _serve(ref), record_event, subject=ref)

    def _start(self, kind: str, user: str, work, record_event, *, subject: str | None) -> dict:
        with self._lock:
            if self.current is not None and self.current["state"] == "running":
                raise Busy(f"a {self.current['kind']} started by {self.current['user']} is still running")
            self.current = {"kind": kind, "subject": subject, "user": user, "state": "running",
                            "started_ts": time.time(), "finished_ts": None, "error": None, "result": None,
                            "lines": collections.deque(maxlen=MAX_LINES)}
            op = self.current
        self._thread = threading.Thread(target=self._run, args=(op, work, record_event), name=f"console-{kind}",
                                        daemon=True)
        self._thread.start()
        return self.snapshot()

    def _say(self, op: dict, message: str) -> None:
        with self._lock:
            op["lines"].append(f"{time.strftime('%H:%M:%S', time.gmtime())} {message}")

    def _run(self, op: dict, work, record_event) -> None:
        try:
            result, state, error = work(lambda m: self._say(op, m)), "done", None
        except ApplianceError as exc:
            result, state, error = None, "failed", exc.one_line()
        except Exception as exc:  # noqa: BLE001 - reported on the page, never a dead thread
            log.exception("%s from the console failed", op["kind"])
            result, state, error = None, "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            op.update(state=state, error=error, result=result, finished_ts=time.time())
        what = {"rollback": "rolled back", "serve": f"served {op['subject']}"}[op["kind"]]
        try:
            record_event(f"{op['user']} {what}: {state}" + (f" ({error})" if error else ""),
                         {"user": op["user"], "operation": op["kind"], "subject": op["subject"], "state": state,
                          "result": result, "error": error})
        except ApplianceError as exc:
            log.warning("cannot record the %s event: %s", op["kind"], exc.one_line())

    def wait(self, timeout_s: float) -> None:
        """For tests and shutdown: wait for a running operation's thread."""
        t = self._thread
        if t is not None:
            t.join(timeout_s)
