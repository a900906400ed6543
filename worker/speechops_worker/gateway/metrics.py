"""Prometheus metrics of one gateway. Names come from `speechops_contract.names` so the scaler,
the dashboards and the alerts query what is exported here. Every series carries
`namespace` and `pipeline`; the registry is per gateway (no process-global state), so
tests can run several gateways in one process."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from speechops_contract import names

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
_JITTER_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


_REJECTION_KINDS = {"over_capacity": "capacity", "draining": "drain", "inference": "server",
                    "inference_unavailable": "server", "internal_error": "server"}


def rejection_kind(reason: str) -> str:
    """capacity | drain | server | client (anything else: the client's mistake)."""
    return _REJECTION_KINDS.get(reason, "client")


class GatewayMetrics:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry()
        base = ["namespace", "pipeline"]
        r = self.registry
        # prometheus_client appends _total to counters itself; strip it from the shared names.
        self.active_streams = Gauge(names.M_ACTIVE_STREAMS, "Open streams", base, registry=r)
        # Arrivals, which open streams alone do not give: `speechops backtest --prometheus`
        # replays them, with the duration Little's law derives from the two.
        self.streams_started = Counter(names.M_STREAMS_STARTED.removesuffix("_total"), "Streams admitted", base,
                                       registry=r)
        self.frames = Counter(names.M_FRAMES.removesuffix("_total"), "Audio frames in, events out", base + ["direction"], registry=r)
        self.backlog = Gauge(names.M_BACKLOG, "Audio chunks received and not yet through VAD in Triton", base, registry=r)
        self.model_backlog = Gauge("speechops_model_backlog_rows", "Rows queued in the gateway per model, not yet sent",
                                   ["namespace", "model"], registry=r)
        self.stage_latency = Histogram(names.M_STAGE_LATENCY, "Stage round trip incl. gateway queueing", base + ["stage"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.partial_latency = Histogram(names.M_PARTIAL_LATENCY, "Last audio of a partial received -> partial sent", base,
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.final_latency = Histogram(names.M_FINAL_LATENCY, "End of speech decided -> final sent", base,
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.jitter = Histogram(names.M_JITTER, "Frame inter-arrival deviation from the audio duration", base,
                                buckets=_JITTER_BUCKETS, registry=r)
        self.dropped = Counter(names.M_DROPPED_FRAMES.removesuffix("_total"), "Frames or events dropped", base + ["reason"], registry=r)
        # kind: capacity (over_capacity: demand this replica could not serve, what the
        # unserved alert counts), drain, client (the client's mistake), server (inference).
        self.rejected = Counter(names.M_REJECTED_STREAMS.removesuffix("_total"), "Streams refused or failed",
                                base + ["reason", "kind"], registry=r)
        self.auth_refused = Counter(names.M_AUTH_REFUSED.removesuffix("_total"),
                                    "Connections refused for a missing or wrong API key", ["namespace", "reason"],
                                    registry=r)
        self.admin_refused = Counter(names.M_ADMIN_REFUSED.removesuffix("_total"),
                                     "POST /drain and /undrain refused (no or a bad operator signature)",
                                     ["namespace", "reason"], registry=r)
        self.degraded = Gauge(names.M_DEGRADED_STREAMS, "Streams at each degradation level", base + ["level"], registry=r)
        self.draining = Gauge(names.M_DRAINING, "1 while the gateway drains", ["namespace"], registry=r)
        self.capacity = Gauge(names.M_STREAM_CAPACITY, "Streams of the pipeline this replica measured it can hold "
                              "within its tier's latency target (admission refuses past it)", base, registry=r)

        self._pipelines: dict[str, PipelineMetrics] = {}

    def pipeline(self, name: str) -> PipelineMetrics:
        """The series of one pipeline, labelled once (a label lookup per frame costs more
        than the update)."""
        bound = self._pipelines.get(name)
        if bound is None:
            bound = self._pipelines[name] = PipelineMetrics(self, name)
        return bound

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PipelineMetrics:
    """What a stream of one pipeline updates: the hooks a session gets."""

    def __init__(self, m: GatewayMetrics, pipeline: str) -> None:
        lbl = (m.namespace, pipeline)
        self._m, self._lbl = m, lbl
        self.frames_in = m.frames.labels(*lbl, "in")
        self.frames_out = m.frames.labels(*lbl, "out")
        self.jitter = m.jitter.labels(*lbl)
        self.partial_latency = m.partial_latency.labels(*lbl)
        self._final_latency = m.final_latency.labels(*lbl)
        self.recent_finals: deque[tuple[float, float]] = deque(maxlen=1024)   # (monotonic, seconds): admission
        self.capacity = m.capacity.labels(*lbl)
        self.active = m.active_streams.labels(*lbl)
        self.started = m.streams_started.labels(*lbl)
        self._stages: dict[str, object] = {}

    def final_latency(self, seconds: float) -> None:
        self._final_latency.observe(seconds)
        self.recent_finals.append((time.monotonic(), seconds))

    def stage_latency(self, stage: str, seconds: float) -> None:
        hist = self._stages.get(stage)
        if hist is None:
            hist = self._stages[stage] = self._m.stage_latency.labels(*self._lbl, stage)
        hist.observe(seconds)

    def level_moved(self, old: int | None, new: int | None) -> None:
        """A stream left level `old` (None: it opened) for `new` (None: it closed)."""
        if old is not None:
            self._m.degraded.labels(*self._lbl, str(old)).dec()
        if new is not None:
            self._m.degraded.labels(*self._lbl, str(new)).inc()

    def dropped(self, reason: str, frames: int = 1) -> None:
        self._m.dropped.labels(*self._lbl, reason).inc(frames)

    def rejected(self, reason: str) -> None:
        self._m.rejected.labels(*self._lbl, reason, rejection_kind(reason)).inc()
