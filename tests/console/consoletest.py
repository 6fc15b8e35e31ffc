"""The console served for real on a free loopback port, by a thread of the test process."""

from __future__ import annotations

import time

from gwtest import AppThread


def wait_until(driver, predicate, timeout_s: float = 20.0):
    """``predicate(driver)``'s first truthy value within ``timeout_s`` (a page still changing
    may raise meanwhile); fails with the last value or error."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate(driver)
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - the page is still changing
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out; last: {last!r}")


class ConsoleServer(AppThread):
    """``appliance.console.server.make_app`` on aiohttp; stopping it also closes the console."""

    def __init__(self, console):
        from appliance.console.server import make_app

        self.console = console
        super().__init__(make_app(console), name="console-server")

    def stop(self) -> None:
        super().stop()
        self.console.close()
