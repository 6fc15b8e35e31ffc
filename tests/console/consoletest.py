"""The console served for real on a free loopback port, by a thread of the test process."""

from __future__ import annotations

from gwtest import AppThread


class ConsoleServer(AppThread):
    """``appliance.console.server.make_app`` on aiohttp; stopping it also closes the console."""

    def __init__(self, console):
        from appliance.console.server import make_app

        self.console = console
        super().__init__(make_app(console), name="console-server")

    def stop(self) -> None:
        super().stop()
        self.console.close()
