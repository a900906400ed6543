"""The gateway's admin HTTP endpoints (aiohttp), on their own port:

GET  /metrics   Prometheus text format
GET  /healthz   200 while the process serves
GET  /readyz    200, or 503 with the reason (draining, Triton not ready)
POST /drain     202: stop admitting, let open streams finish (the scaler's scale-down)
POST /undrain   200: admit again; 409 once a shutdown drain has begun

A wrong method gets 405, an unknown path 404. Metrics and probes are open (Prometheus,
the kubelet); drain and undrain only for the operator's signature or the pod itself
(admin_auth.py), else 401 with the reason. The same endpoints are also served on a Unix
socket when one is configured (the preStop hook's way in).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from speechops_contract.admin_auth import SCHEME
from speechops_contract.names import M_ADMIN_REFUSED
from speechops_worker.gateway.admin_auth import AdminAuth

log = logging.getLogger("speechops.gateway.admin")
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class AdminHooks:
    metrics: Callable[[], bytes]          # the exposition
    not_ready: Callable[[], str | None]   # None when ready, else why not
    drain: Callable[[], int]              # starts a drain, returns the open streams
    undrain: Callable[[], bool]           # False when it cannot be taken back
    open_streams: Callable[[], int]
    refused: Callable[[str], None]        # counts an admin request refused, by reason


class AdminServer:
    def __init__(self, hooks: AdminHooks, auth: AdminAuth):
        self.hooks = hooks
        self.auth = auth
        self._logged: dict[str, float] = {}     # refusal reason -> when last logged
        self.port = 0
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz),
                        web.get("/readyz", self._readyz), web.post("/drain", self._drain),
                        web.post("/undrain", self._undrain)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self, host: str, port: int, socket_path: str | None = None) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if socket_path:
            await web.UnixSite(self._runner, socket_path).start()
            os.chmod(socket_path, 0o600)     # the gateway's own user only
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

    def _refusal(self, request: web.Request) -> web.Response | None:
        """None when the request may drain or undrain, else the 401 to answer."""
        sock = request.transport.get_extra_info("socket") if request.transport else None
        verdict = self.auth.check(request.method, request.path, request.headers.get("Authorization"),
                                  unix_socket=sock is not None and sock.family == socket.AF_UNIX, peer=request.remote)
        if verdict.allowed:
            return None
        self.hooks.refused(verdict.reason)
        # One line per reason a minute: whoever reaches the port cannot flood the log.
        now = time.monotonic()
        if now - self._logged.get(verdict.reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[verdict.reason] = now
            log.warning("refused %s %s from %s: %s (further refusals for this reason: the metric %s)",
                        request.method, request.path, request.remote, verdict.reason, M_ADMIN_REFUSED)
        return web.Response(status=401, text=f"{verdict.reason}: {verdict.message}\n",
                            headers={"WWW-Authenticate": SCHEME})

    async def _drain(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        return web.Response(status=202, text=f"draining {self.hooks.drain()} open streams\n")

    async def _undrain(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        if self.hooks.undrain():
            return web.Response(text=f"admitting streams ({self.hooks.open_streams()} open)\n")
        return web.Response(status=409, text="shutting down: cannot undrain\n")
