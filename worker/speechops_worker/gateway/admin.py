"""The gateway's admin HTTP endpoints (aiohttp), on their own port:

GET  /metrics   Prometheus text format
GET  /healthz   200 while the process serves
GET  /readyz    200, or 503 with the reason (draining, Triton not ready)
POST /drain     202: stop admitting, let open streams finish (the scaler's scale-down)
POST /undrain   200: admit again; 409 once a shutdown drain has begun

A wrong method gets 405, an unknown path 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class AdminHooks:
    metrics: Callable[[], bytes]          # the exposition
    not_ready: Callable[[], str | None]   # None when ready, else why not
    drain: Callable[[], int]              # starts a drain, returns the open streams
    undrain: Callable[[], bool]           # False when it cannot be taken back
    open_streams: Callable[[], int]


class AdminServer:
    def __init__(self, hooks: AdminHooks):
        self.hooks = hooks
        self.port = 0
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz),
                        web.get("/readyz", self._readyz), web.post("/drain", self._drain),
                        web.post("/undrain", self._undrain)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.hooks.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = self.hooks.not_ready()
        return web.Response(text="ready\n") if reason is None else web.Response(status=503, text=f"{reason}\n")

    async def _drain(self, request: web.Request) -> web.Response:
        return web.Response(status=202, text=f"draining {self.hooks.drain()} open streams\n")

    async def _undrain(self, request: web.Request) -> web.Response:
        if self.hooks.undrain():
            return web.Response(text=f"admitting streams ({self.hooks.open_streams()} open)\n")
        return web.Response(status=409, text="shutting down: cannot undrain\n")
