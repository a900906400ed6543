"""The gateway process: WebSocket server, admission, degradation, drain, admin HTTP.

The `Gateway` object is the only shared state; everything per stream lives in its
`Session`. WebSockets are served with picows on uvloop: measured here ~10 us of CPU per
640-byte frame against ~25-30 us for `websockets`, and the gateway's frame
budget is what decides how many streams a pod holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
from collections import Counter as Tally
from dataclasses import dataclass, field

from picows import WSCloseCode, WSListener, WSMsgType, WSUpgradeRequest, ws_create_server

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops_contract.catalog import MODELS
from speechops_contract.profiles import profile as profile_of
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.inference import TritonInfer
from speechops_worker.gateway.metrics import GatewayMetrics
from speechops_worker.gateway.packer import Packer, pcm16_to_float
from speechops_worker.gateway.pipeline import MODEL_KINDS, PipelinePlan, plan
from speechops_worker.gateway.segmenter import VadParams
from speechops_worker.gateway.session import Session

log = logging.getLogger("speechops.gateway")

STREAM_PATH = "/v1/stream"
MAX_LEVEL = 2


@dataclass
class GatewayConfig:
    triton_url: str                               # host:port of Triton's gRPC endpoint
    pipelines: dict[str, PipelineSpec]
    host: str = "127.0.0.1"
    port: int = 0                                 # 0: any free port (tests); pods use names.GATEWAY_PORT
    admin_port: int | None = 0                    # None: no admin HTTP
    namespace: str = field(default_factory=lambda: os.environ.get(names.ENV_NAMESPACE, "local"))
    default_pipeline: str | None = None           # used when `start` names none
    max_streams: int | None = None                # per pipeline; None: spec.capacity.streamsPerReplica
    max_frame_bytes: int = 32_000                 # 1 s of audio
    max_queued_chunks: int = 64                   # ~2 s waiting for VAD, then the socket is not read
    send_buffer_limit: int = 256 * 1024           # unsent event bytes before a client is cut off
    slow_client_timeout_s: float = 5.0            # writes paused this long: the client is cut off
    socket_send_buffer: int = 64 * 1024           # SO_SNDBUF: bounds kernel memory per stream too
    start_timeout_s: float = 10.0                 # a connection must send `start` within this
    vad: VadParams = VadParams()
    degrade_after_s: float = 0.25                 # p90 of a stage's queue wait above this: step down
    restore_below_s: float = 0.05                 # ... below this for restore_hold_s: step up
    restore_hold_s: float = 2.0
    step_hold_s: float = 1.0                      # at most one step down per this
    load_horizon_s: float = 2.0                   # queue waits of the last this many seconds count
    drain_timeout_s: float | None = None          # None: the largest spec.streams.drainTimeout
    infer_timeout_s: float = 10.0


def decide_level(level: int, wait: float | None, calm_since: float | None, last_step: float, now: float,
                 cfg: GatewayConfig) -> tuple[int, float | None, float]:
    """Degradation level from the longest recent queue wait of a stage (pure).

    Returns (level, calm_since, last_step). One step at a time, down fast (every
    step_hold_s while overloaded), up slowly (after restore_hold_s of calm)."""
    if wait is not None and wait > cfg.degrade_after_s:
        if level < MAX_LEVEL and now - last_step >= cfg.step_hold_s:
            return level + 1, None, now
        return level, None, last_step
    if wait is None or wait < cfg.restore_below_s:
        calm_since = now if calm_since is None else calm_since
        if level > 0 and now - calm_since >= cfg.restore_hold_s and now - last_step >= cfg.restore_hold_s:
            return level - 1, now, now
        return level, calm_since, last_step
    return level, None, last_step


class _StreamListener(WSListener):
    """picows callbacks -> the session. Every exception ends only this stream."""

    def __init__(self, gateway: Gateway):
        self.gw = gateway
        self.session: Session | None = None
        self.paused_since: float | None = None

    def on_ws_connected(self, transport) -> None:
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None and self.gw.config.socket_send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.gw.config.socket_send_buffer)
        self.session = self.gw.open_session(transport, self)

    def on_ws_frame(self, transport, frame) -> None:
        s = self.session
        if s is None or s.closed:
            return
        try:
            if not frame.fin or frame.msg_type == WSMsgType.CONTINUATION:
                raise P.ProtocolError(P.E_BAD_MESSAGE, "fragmented WebSocket messages are not supported; send whole frames")
            if frame.msg_type == WSMsgType.BINARY:
                s.on_audio(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.TEXT:
                try:
                    text = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    raise P.ProtocolError(P.E_BAD_JSON, "text frame is not valid UTF-8") from None
                s.on_text(text)
            elif frame.msg_type == WSMsgType.CLOSE:
                # The client closed without `stop`: nothing more can be sent to it.
                s.release()
                transport.send_close(frame.get_close_code())
                transport.disconnect()
        except P.ProtocolError as exc:
            s.fail(exc.code, exc.message, retry_after_s=exc.retry_after_s)
        except Exception:  # a bug must cost one stream, never the gateway
            log.exception("stream %x failed", s.stream_id)
            s.fail(P.E_INTERNAL, "the gateway failed on this stream; it was closed, other streams are unaffected")

    def on_ws_disconnected(self, transport) -> None:
        if self.session is not None and not self.session.closed:
            log.info("stream %x: client went away mid-stream", self.session.stream_id)
            self.session.release()

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.paused_since = None


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.plans: dict[str, PipelinePlan] = {name: plan(name, spec) for name, spec in config.pipelines.items()}
        if config.default_pipeline is None and len(self.plans) == 1:
            config.default_pipeline = next(iter(self.plans))
        self.metrics = GatewayMetrics(config.namespace)
        self.packers: dict[str, Packer] = {}
        self.sessions: dict[Session, _StreamListener] = {}
        self.active: Tally[str] = Tally()
        self.level = 0
        self.draining = False
        self.triton_ready = False
        self.port = 0
        self.admin_port = 0
        self._calm_since: float | None = None
        self._last_step = 0.0
        self._id_prefix = random.getrandbits(23) << 40   # two gateways on one Triton never share ids
        self._next_id = 0
        self._server: asyncio.AbstractServer | None = None
        self._admin: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._drain_task: asyncio.Task | None = None
        self._shutting_down = False      # a drain for shutdown cannot be taken back
        self._stage_hist: dict[tuple[str, str], object] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        logging.getLogger("picows").setLevel(logging.WARNING)   # one INFO line per connection otherwise
        infer = TritonInfer(self.config.triton_url, self.config.infer_timeout_s)
        self._infer = infer
        windows: dict[str, float] = {}
        for p in self.plans.values():
            window = profile_of(p.spec.profile).pack_window_ms / 1000.0
            for model in p.models:
                windows[model] = min(window, windows.get(model, window))
        for model, window in windows.items():
            vad = MODEL_KINDS[model] == "vad"
            self.packers[model] = Packer(
                model, tuple(t.name for t in MODELS[model].outputs), infer, window_s=window,
                # VAD requests are cheap and frequent: two in flight overlap transfer and
                # compute. ASR requests are long and Triton runs one model instance: one in
                # flight, so rows that arrive meanwhile wait here (where the wait is seen
                # and counts as load) and go together in the next generate call.
                max_in_flight=2 if vad else 1, max_rows=4096 if vad else 16,
                prepare=pcm16_to_float if vad else None)
        self._server = await ws_create_server(
            self._listener_for, self.config.host, self.config.port,
            max_frame_size=max(self.config.max_frame_bytes * 2, 65536), websocket_handshake_timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.admin_port is not None:
            self._admin = await asyncio.start_server(self._admin_conn, self.config.host, self.config.admin_port)
            self.admin_port = self._admin.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self.triton_ready = await loop.run_in_executor(None, infer.ready)
        self._tasks = [loop.create_task(self._control_loop()), loop.create_task(self._sweep_loop()),
                       loop.create_task(self._health_loop())]
        log.info("gateway listening on ws://%s:%d%s (admin :%s), pipelines: %s", self.config.host, self.port,
                 STREAM_PATH, self.admin_port or "-", ", ".join(self.plans))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for session in list(self.sessions):
            session.fail(P.E_INTERNAL, "the gateway is shutting down")
        for server in (self._server, self._admin):
            if server is not None:
                server.close()
        for packer in self.packers.values():
            packer.close()

    async def drain(self, timeout_s: float | None = None, *, shutdown: bool = True) -> None:
        """Stop admitting and let open streams finish.

        Shutdown (SIGTERM): up to the drain timeout, then the rest end gracefully (their
        audio so far is transcribed, then `closed` reason drain), inside the pod's grace period.
        The scaler's drain (`shutdown=False`, POST /drain): no deadline, because the
        operator removes the pod only once it is empty, so no stream is cut; `undrain`
        takes it back. A shutdown during the scaler's drain puts the deadline back."""
        if shutdown and not self._shutting_down:
            self._shutting_down = True
            if self._drain_task is not None and not self._drain_task.done():
                self._drain_task.cancel()
                self._drain_task = None
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(
                self._drain(timeout_s if shutdown else math.inf))
        await asyncio.shield(self._drain_task)

    def undrain(self) -> bool:
        """Admit streams again (the scaler needs this pod back before it emptied: it serves
        at once, where a new pod takes a start). False once a shutdown drain has begun."""
        if self._shutting_down:
            return False
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        if self.draining:
            log.info("undrained: admitting streams again (%d open)", len(self.sessions))
        self.draining = False
        self.metrics.draining.labels(self.config.namespace).set(0)
        return True

    async def _drain(self, timeout_s: float | None) -> None:
        self.draining = True
        self.metrics.draining.labels(self.config.namespace).set(1)
        timeout = timeout_s if timeout_s is not None else self.config.drain_timeout_s
        if timeout is None:
            timeout = max(p.spec.streams.drain_timeout for p in self.plans.values())
        if math.isfinite(timeout):
            log.info("draining: %d open streams, up to %.0fs", len(self.sessions), timeout)
        else:
            log.info("draining for scale-down: %d open streams, until they end", len(self.sessions))
        deadline = time.monotonic() + timeout
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.finish("drain")
        grace = time.monotonic() + 15.0
        while self.sessions and time.monotonic() < grace:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.fail(P.E_DRAINING, "the gateway drained before this stream's results were ready")
        log.info("drained")

    # ---------------------------------------------------------------- sessions

    def _listener_for(self, request: WSUpgradeRequest):
        path = request.path.decode() if isinstance(request.path, bytes) else request.path
        if path.split("?", 1)[0] != STREAM_PATH:
            return None
        return _StreamListener(self)

    def open_session(self, transport, listener: _StreamListener) -> Session:
        self._next_id += 1
        session = Session(self, transport, self._id_prefix | self._next_id)
        self.sessions[session] = listener
        return session

    def admit(self, pipeline: str) -> None:
        if self.draining:
            raise P.ProtocolError(P.E_DRAINING, "this gateway is draining; reconnect and another replica takes the stream",
                                  retry_after_s=1.0)
        limit = self.config.max_streams or self.plans[pipeline].spec.capacity.streams_per_replica
        if self.active[pipeline] >= limit:
            raise P.ProtocolError(P.E_OVER_CAPACITY, f"this replica holds its maximum of {limit} streams for "
                                  f"pipeline {pipeline!r}; retry shortly (the scaler adds replicas)", retry_after_s=2.0)
        self.active[pipeline] += 1

    def forget(self, session: Session) -> None:
        if self.sessions.pop(session, None) is not None and session.plan is not None:
            self.active[session.plan.name] -= 1

    def stage_latency(self, pipeline: str, stage: str, seconds: float) -> None:
        hist = self._stage_hist.get((pipeline, stage))
        if hist is None:
            hist = self._stage_hist[(pipeline, stage)] = self.metrics.stage_latency.labels(
                self.config.namespace, pipeline, stage)
        hist.observe(seconds)

    def level_gauge(self, pipeline: str, level: int, delta: int) -> None:
        self.metrics.degraded.labels(self.config.namespace, pipeline, str(level)).inc(delta)

    # ---------------------------------------------------------------- background loops

    async def _control_loop(self) -> None:
        """Degradation: every 250 ms, from the p90 of how long requests of each utterance
        model waited in the gateway for Triton. The wait, not the answer time: one
        stream on a slow machine waits for nothing, and stepping it down would buy it
        nothing; a queue means more work than the model keeps up with. Only ASR and
        analytics count: stepping down relieves them (fewer partials,
        fallback models, optional stages skipped); VAD overload is met by queueing,
        backpressure and admission instead."""
        while True:
            await asyncio.sleep(0.25)
            waits = [wait for model, p in self.packers.items()
                     if MODEL_KINDS[model] != "vad" and (wait := p.recent_wait(self.config.load_horizon_s)) is not None]
            for model, packer in self.packers.items():
                self.metrics.model_backlog.labels(self.config.namespace, model).set(packer.queued_rows)
            backlog = Tally()
            for session in self.sessions:
                if session.plan is not None:
                    backlog[session.plan.name] += session.chunks_in - session.chunks_done
            for pipeline in self.plans:
                self.metrics.backlog.labels(self.config.namespace, pipeline).set(backlog[pipeline])
            wait = max(waits) if waits else None
            level, self._calm_since, self._last_step = decide_level(
                self.level, wait, self._calm_since, self._last_step, time.monotonic(), self.config)
            if level != self.level:
                log.warning("degradation level %d -> %d (stage queue wait p90 %.0f ms)", self.level, level,
                            (wait or 0) * 1000)
                self.level = level
                for session in list(self.sessions):
                    session.set_level(level)

    async def _sweep_loop(self) -> None:
        """Idle streams, streams that never started, clients that stopped reading."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for session, listener in list(self.sessions.items()):
                if session.closed:
                    continue
                session.flush_counters()
                if listener.paused_since is not None and now - listener.paused_since > self.config.slow_client_timeout_s:
                    session.slow_consumer()
                elif session.plan is None:
                    if now - session.last_frame_at > self.config.start_timeout_s:
                        session.fail(P.E_NOT_STARTED, f"no start message within {self.config.start_timeout_s:g}s")
                elif not session.stopping and now - session.last_frame_at > session.plan.spec.streams.idle_timeout:
                    session.finish("idle_timeout")

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self.triton_ready = await loop.run_in_executor(None, self._infer.ready)

    # ---------------------------------------------------------------- admin HTTP

    async def _admin_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """/metrics, /healthz, /readyz, POST /drain, POST /undrain: a few lines of HTTP/1.1, no framework."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            status, ctype, body = 404, "text/plain", b"not found\n"
            if method == "GET" and path == "/metrics":
                status, ctype, body = 200, "text/plain; version=0.0.4", self.metrics.render()
            elif method == "GET" and path == "/healthz":
                status, body = 200, b"ok\n"
            elif method == "GET" and path == "/readyz":
                if self.draining:
                    status, body = 503, b"draining\n"
                elif not self.triton_ready:
                    status, body = 503, b"triton not ready\n"
                else:
                    status, body = 200, b"ready\n"
            elif method == "POST" and path == "/drain":
                asyncio.get_running_loop().create_task(self.drain(shutdown=False))
                status, body = 202, f"draining {len(self.sessions)} open streams\n".encode()
            elif method == "POST" and path == "/undrain":
                if self.undrain():
                    status, body = 200, f"admitting streams ({len(self.sessions)} open)\n".encode()
                else:
                    status, body = 409, b"shutting down: cannot undrain\n"
            elif path in ("/metrics", "/healthz", "/readyz", "/drain", "/undrain"):
                status, body = 405, b"method not allowed\n"
            reason = {200: "OK", 202: "Accepted", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
                      503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()


__all__ = ["Gateway", "GatewayConfig", "STREAM_PATH", "decide_level", "WSCloseCode"]
