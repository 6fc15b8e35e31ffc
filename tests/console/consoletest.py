"""A console server on a free loopback port, served by a thread of the test process."""

from __future__ import annotations

import asyncio
import threading

from gwtest import free_port


class ConsoleServer:
    """``appliance.console.server.make_app`` served for real (aiohttp, a thread of its own)."""

    def __init__(self, console, host: str = "127.0.0.1"):
        from aiohttp import web

        from appliance.console.server import make_app

        self.console = console
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.loop = asyncio.new_event_loop()
        app = make_app(console)
        ready = threading.Event()

        async def start():
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, host, self.port).start()
            ready.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=run, name="console-server", daemon=True)
        self.thread.start()
        if not ready.wait(15):
            raise TimeoutError("the console did not start")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.console.close()
