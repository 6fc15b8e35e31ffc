"""Long changes started from the console (a rollback): one at a time, in a thread, with progress.

Why not the view worker: a rollback is the deploy pipeline (blue/green behind health gates,
journaled), and can take minutes; the pages must keep answering meanwhile. The operation runs
the same library calls as ``appliance rollback --yes`` (:func:`appliance.deploy.requests.run`
of :func:`~appliance.deploy.requests.rollback_request`, after finishing an interrupted upgrade),
on its own state connection, and keeps its last progress lines for the releases page. A second
start while one runs is refused (409); the pipeline's own instance lock also keeps ``init`` or
an upgrade from running at the same time.
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
        with self._lock:
            if self.current is not None and self.current["state"] == "running":
                raise Busy(f"a {self.current['kind']} started by {self.current['user']} is still running")
            self.current = {"kind": "rollback", "user": user, "state": "running", "started_ts": time.time(),
                            "finished_ts": None, "error": None, "result": None,
                            "lines": collections.deque(maxlen=MAX_LINES)}
            op = self.current
        self._thread = threading.Thread(target=self._rollback, args=(op, record_event), name="console-rollback",
                                        daemon=True)
        self._thread.start()
        return self.snapshot()

    def _say(self, op: dict, message: str) -> None:
        with self._lock:
            op["lines"].append(f"{time.strftime('%H:%M:%S', time.gmtime())} {message}")

    def _rollback(self, op: dict, record_event) -> None:
        from appliance.bundle.apply import recover
        from appliance.deploy.requests import rollback_request, run

        say = lambda m: self._say(op, m)  # noqa: E731 - the pipeline's progress callback
        try:
            recover(say=say)
            res = run(rollback_request(), say=say)
            result = {"release": res.release, "from_version": res.from_version, "to_version": res.to_version}
            state, error = "done", None
        except ApplianceError as exc:
            result, state, error = None, "failed", exc.one_line()
        except Exception as exc:  # noqa: BLE001 - reported on the page, never a dead thread
            log.exception("rollback from the console failed")
            result, state, error = None, "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            op.update(state=state, error=error, result=result, finished_ts=time.time())
        try:
            record_event(f"{op['user']} rolled back: {state}" + (f" ({error})" if error else ""),
                         {"user": op["user"], "state": state, "result": result, "error": error})
        except ApplianceError as exc:
            log.warning("cannot record the rollback event: %s", exc.one_line())

    def wait(self, timeout_s: float) -> None:
        """For tests and shutdown: wait for a running operation's thread."""
        t = self._thread
        if t is not None:
            t.join(timeout_s)
