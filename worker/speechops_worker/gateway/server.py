"""The gateway process: serves the protocols, admits streams, runs the background loops.

`Gateway` owns what streams share: the pipeline plans, one packer per model (the Triton
client behind them), the metrics, admission, the degradation level, drain. Each stream's
state lives in its `Session` (session.py), which sees only a `SessionHost`; the wire
protocols (native.py for `/v1/stream`) see the gateway as `native.Streams`. Degradation
rules are in degrade.py, the admin endpoints in admin.py.

WebSockets are served with picows on uvloop, which costs a fraction of the CPU per frame
that `websockets` does (docs/benchmarks/gateway-2026-11-25.md), and the gateway's frame
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
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops_contract.catalog import MODELS, SAMPLE_RATE, VAD_CHUNK
from speechops_contract.profiles import profile as profile_of
from speechops_worker.gateway import auth
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway import realtime as R
from speechops_worker.gateway.admin import AdminHooks, AdminServer
from speechops_worker.gateway.admin_auth import AdminAuth
from speechops_worker.gateway.admission import Admission, Load
from speechops_worker.gateway.degrade import Degrader
from speechops_worker.gateway.inference import TritonInfer
from speechops_worker.gateway.metrics import GatewayMetrics
from speechops_worker.gateway.native import NativeConnection
from speechops_worker.gateway.packer import Packer, pcm16_to_float
from speechops_worker.gateway.pipeline import MODEL_KINDS, PipelinePlan, plan
from speechops_worker.gateway.realtime_conn import RealtimeConnection
from speechops_worker.gateway.segmenter import VadParams
from speechops_worker.gateway.session import Limits, Session, SessionHost
from speechops_worker.gateway.tls import CertReloader

log = logging.getLogger("speechops.gateway")

STREAM_PATH = "/v1/stream"
MAX_WS_FRAME = 1 << 20


@dataclass
class GatewayConfig:
    triton_url: str                               # host:port of Triton's gRPC endpoint
    pipelines: dict[str, PipelineSpec]
    host: str | None = "127.0.0.1"                # None: every interface, IPv4 and IPv6 (pods)
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
    load_admission: bool = True                   # False: admit up to the hard cap, whatever the load
    admission_horizon_s: float = 5.0              # utilisation and final latency of the last this many seconds
    drain_timeout_s: float | None = None          # None: the largest spec.streams.drainTimeout
    infer_timeout_s: float = 10.0
    api_keys: str | None = None                   # file or directory of API keys; None: no key needed
    tls_cert: str | None = None                   # with tls_key: serve wss://, reloaded on rotation
    tls_key: str | None = None
    admin_public_keys: str | None = None          # file of the operator's public keys; None: drain from loopback only
    admin_socket: str | None = None               # also serve admin on this Unix socket (the pod's preStop)
    pod_name: str = field(default_factory=lambda: os.environ.get(names.ENV_POD_NAME) or socket.gethostname())


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.plans: dict[str, PipelinePlan] = {name: plan(name, spec) for name, spec in config.pipelines.items()}
        if config.default_pipeline is None and len(self.plans) == 1:
            config.default_pipeline = next(iter(self.plans))
        self.default_pipeline = config.default_pipeline
        self.metrics = GatewayMetrics(config.namespace)
        self.packers: dict[str, Packer] = {}
        self.sessions: set[Session] = set()              # started streams
        self.connections: set = set()                    # protocol connections, started or not
        self.active: Tally[str] = Tally()
        silence_s = config.vad.min_silence_chunks * VAD_CHUNK / SAMPLE_RATE
        self.admission = {name: Admission(profile_of(p.spec.profile).final_latency_target_s, self._hard_cap(name),
                                          utterance_models=any(s for w in p.waves for s in w), silence_s=silence_s)
                          for name, p in self.plans.items()}
        self._busy: dict[str, deque[tuple[float, float]]] = {}   # model -> (time, busy seconds) samples
        self.degrader = Degrader(config)
        self.draining = False
        self.triton_ready = False
        self.port = 0
        self.admin_port = 0
        self.host = SessionHost(submit=self._submit, metrics=self.metrics.pipeline, on_closed=self._forget,
                                limits=Limits(config.max_frame_bytes, config.max_queued_chunks, config.vad))
        # path -> protocol: a connection class over Streams
        self.routes = {STREAM_PATH: NativeConnection, R.PATH: RealtimeConnection}
        self.keys = auth.KeyStore(config.api_keys) if config.api_keys else None
        self.tls = CertReloader(config.tls_cert, config.tls_key) if config.tls_cert or config.tls_key else None
        self._id_prefix = random.getrandbits(23) << 40   # two gateways on one Triton never share ids
        self._next_id = 0
        self._server: asyncio.AbstractServer | None = None
        self._admin: AdminServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._drain_task: asyncio.Task | None = None
        self._shutting_down = False      # a drain for shutdown cannot be taken back

    @property
    def level(self) -> int:
        return self.degrader.level

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
            # Frames over max_frame_bytes get an `error` event from the protocol; only past
            # this much (read into memory first) can picows do no more than close with 1009.
            max_frame_size=MAX_WS_FRAME, websocket_handshake_timeout=5,
            # With TLS, asyncio's own SSL transport: the certificate is swapped per
            # handshake in the SNI callback, which picows' fast SSL engine does not survive.
            ssl=self.tls.server_context if self.tls else None, use_aiofastnet=False if self.tls else None)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.admin_port is not None:
            refused = self.metrics.admin_refused
            self._admin = AdminServer(AdminHooks(
                metrics=self.metrics.render, not_ready=self._not_ready, drain=self._admin_drain,
                undrain=self.undrain, open_streams=lambda: len(self.sessions),
                refused=lambda reason: refused.labels(self.config.namespace, reason).inc()),
                AdminAuth(self.config.admin_public_keys, self.config.namespace, self.config.pod_name))
            self.admin_port = await self._admin.start(self.config.host, self.config.admin_port,
                                                      self.config.admin_socket)
        loop = asyncio.get_running_loop()
        self.triton_ready = await loop.run_in_executor(None, infer.ready)
        self._tasks = [loop.create_task(self._control_loop()), loop.create_task(self._sweep_loop()),
                       loop.create_task(self._health_loop())]
        log.info("gateway listening on %s://%s:%d%s and %s (admin :%s, %s), pipelines: %s",
                 "wss" if self.tls else "ws", self.config.host or "*", self.port, STREAM_PATH, R.PATH, self.admin_port or "-",
                 f"{len(self.keys)} API keys" if self.keys else "no API keys", ", ".join(self.plans))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for conn in list(self.connections):
            conn.fail(P.E_INTERNAL, "the gateway is shutting down")
        if self._server is not None:
            self._server.close()
        if self._admin is not None:
            await self._admin.stop()
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
            session.end("drain")
        grace = time.monotonic() + 15.0
        while self.sessions and time.monotonic() < grace:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.fail(P.E_DRAINING, "the gateway drained before this stream's results were ready")
        log.info("drained")

    def _admin_drain(self) -> int:
        asyncio.get_running_loop().create_task(self.drain(shutdown=False))
        return len(self.sessions)

    def _not_ready(self) -> str | None:
        if self.draining:
            return "draining"
        if not self.triton_ready:
            return "triton not ready"
        return None

    # ---------------------------------------------------------------- streams (native.Streams)

    def _listener_for(self, request: WSUpgradeRequest):
        target = request.path.decode() if isinstance(request.path, bytes) else request.path
        path, _, query = target.partition("?")
        protocol = self.routes.get(path)
        if protocol is None:
            return None
        conn = protocol(self)
        conn.query = query
        cred = auth.credential(request.headers)
        if self.keys is not None:
            # A refused client still gets the protocol's own `error` before the close:
            # a browser cannot read an HTTP 401's body, an SDK reports the event.
            name, refusal = self.keys.check(cred.key)
            if refusal is not None:
                self.metrics.auth_refused.labels(self.config.namespace, refusal).inc()
                conn.auth_refusal = (refusal, "no API key: send `Authorization: Bearer KEY` (or, from a browser, "
                                     "the subprotocol openai-insecure-api-key.KEY)" if refusal == auth.MISSING
                                     else "the API key is not valid for this gateway")
        if cred.subprotocol is None:
            return conn
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": cred.subprotocol}), conn)

    def connected(self, conn) -> None:
        self.connections.add(conn)

    def disconnected(self, conn) -> None:
        self.connections.discard(conn)

    def open_stream(self, pipeline: str, options: P.StreamOptions, sink, vad: VadParams | None = None,
                    manual_turns: bool = False) -> Session:
        """Admits a stream of `pipeline` and starts its session, or raises ProtocolError."""
        self.admit(pipeline)
        self._next_id += 1
        session = Session(self.host, self._id_prefix | self._next_id, sink)
        session.pipeline = pipeline
        self.sessions.add(session)
        try:
            session.start(self.plans[pipeline], options, self.level, vad, manual_turns)
        except BaseException:
            session.release()
            raise
        return session

    def admissible(self, pipeline: str) -> None:
        """Raises the ProtocolError `admit` would, without taking a place."""
        self.admit(pipeline)
        self.active[pipeline] -= 1

    def admit(self, pipeline: str) -> None:
        if self.draining:
            raise P.ProtocolError(P.E_DRAINING, "this gateway is draining; reconnect and another replica takes the stream",
                                  retry_after_s=1.0)
        limit = self._hard_cap(pipeline)
        if self.active[pipeline] >= limit:
            raise P.ProtocolError(P.E_OVER_CAPACITY, f"this replica holds its maximum of {limit} streams for "
                                  f"pipeline {pipeline!r}; retry shortly (the scaler adds replicas)", retry_after_s=2.0)
        adm = self.admission[pipeline]
        if self.config.load_admission and not adm.admits(self.active[pipeline]):
            raise P.ProtocolError(P.E_OVER_CAPACITY, f"this replica holds {self.active[pipeline]} streams of pipeline "
                                  f"{pipeline!r}, all it can serve within its tier's {adm.target_s:g}s final latency "
                                  f"target ({adm.reason}); retry shortly", retry_after_s=2.0)
        self.active[pipeline] += 1

    def _hard_cap(self, pipeline: str) -> int:
        return self.config.max_streams or self.plans[pipeline].spec.capacity.streams_per_replica

    def refused(self, pipeline: str | None, reason: str) -> None:
        self.metrics.pipeline(pipeline or self.default_pipeline or "").rejected(reason)

    def _forget(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.active[session.pipeline] -= 1

    def _submit(self, model: str, part: dict, urgent: bool) -> asyncio.Future:
        return self.packers[model].submit(part, urgent)

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
                backlog[session.plan.name] += session.backlog
            for pipeline in self.plans:
                self.metrics.backlog.labels(self.config.namespace, pipeline).set(backlog[pipeline])
            self._update_admission()
            wait = max(waits) if waits else None
            before = self.level
            if self.degrader.tick(wait, time.monotonic()):
                log.warning("degradation level %d -> %d (stage queue wait p90 %.0f ms)", before, self.level,
                            (wait or 0) * 1000)
                for session in list(self.sessions):
                    session.set_level(self.level)

    def _update_admission(self) -> None:
        """Each pipeline's capacity from what its models and streams measured (admission.py)."""
        now = time.monotonic()
        horizon = self.config.admission_horizon_s
        utilisation: dict[str, float] = {}
        for model, packer in self.packers.items():
            samples = self._busy.setdefault(model, deque())
            samples.append((now, packer.busy_seconds()))
            while len(samples) > 2 and samples[1][0] <= now - horizon:
                samples.popleft()
            (t0, b0), (t1, b1) = samples[0], samples[-1]
            if t1 - t0 >= min(1.0, horizon):
                utilisation[model] = (b1 - b0) / (t1 - t0)
        for name, p in self.plans.items():
            utterance_models = {s.model for w in p.waves for s in w} | {s.fallback_model for w in p.waves for s in w
                                                                        if s.fallback_model}
            busiest = max(utterance_models, key=lambda m: utilisation.get(m, 0.0), default=None)
            recent = [(t, s) for t, s in self.metrics.pipeline(name).recent_finals if t > now - horizon]
            finals = [s for _, s in recent]
            waits = [w for m in p.models if (w := self.packers[m].recent_wait(self.config.load_horizon_s)) is not None]
            load = Load(now=now, streams=self.active[name], utilisation=utilisation.get(busiest),
                        final_p90=float(np.quantile(finals, 0.9)) if finals else None,
                        wait_p90=max(waits) if waits else None,
                        newest_final_from=max((t - s for t, s in recent), default=None))
            capacity = self.admission[name].update(load)
            self.metrics.pipeline(name).capacity.set(capacity if self.config.load_admission else self._hard_cap(name))

    async def _sweep_loop(self) -> None:
        """Idle streams, connections that never started, clients that stopped reading."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.sweep(now)
            for session in list(self.sessions):
                session.flush_counters()
                if not session.stopping and now - session.last_frame_at > session.plan.spec.streams.idle_timeout:
                    session.end("idle_timeout")

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self.triton_ready = await loop.run_in_executor(None, self._infer.ready)


__all__ = ["Gateway", "GatewayConfig", "STREAM_PATH"]
