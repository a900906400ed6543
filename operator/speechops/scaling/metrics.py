"""The scaler's Prometheus metrics (speechops_operator_*), served with the operator's on --metrics-port.

The chart's dashboard ("Forecast vs actual streams", "Forecast band coverage", "Replicas
and placeholders") and its SpeechopsScalerFallback and SpeechopsForecastBandTooNarrow
alerts read these series. Names come from speechops_contract.names;
every series carries `namespace` and `pipeline`.

One call per scaler tick (`record_tick`) keeps them current; `forget` drops a deleted
pipeline's series so dashboards do not show ghosts.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from speechops_contract import names
from speechops import conditions
from speechops.scaling.budget import BURN_WINDOWS

LABELS = ("namespace", "pipeline")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        self.forecast = Gauge(names.M_OP_FORECAST_STREAMS,
                              "Streams the scaler expects at now + lead time.", LABELS, registry=registry)
        self.desired = Gauge(names.M_OP_DESIRED_REPLICAS,
                             "Serving worker replicas the scaler asked for.", LABELS, registry=registry)
        self.ready = Gauge(names.M_OP_READY_REPLICAS,
                           "Worker pods ready to serve streams.", LABELS, registry=registry)
        self.placeholders = Gauge(names.M_OP_PLACEHOLDERS,
                                  "Placeholder pods the scaler asked for (warm capacity).", LABELS,
                                  registry=registry)
        self.upper = Gauge(names.M_OP_FORECAST_UPPER,
                           "Top of the forecast's band at now + lead time: what the fleet is sized to serve.",
                           LABELS, registry=registry)
        self.coverage = Gauge(names.M_OP_BAND_COVERAGE,
                              "Of the forecasts scored over the last day, the share whose outcome came at or "
                              "below the band's top.", LABELS, registry=registry)
        self.coverage_target = Gauge(names.M_OP_BAND_TARGET,
                                     "The share of outcomes the tier's band is meant to cover (its quantile).",
                                     LABELS, registry=registry)
        self.spares = Gauge(names.M_OP_SPARES,
                            "Of the desired workers, those kept drained as warm spares (no new streams).", LABELS,
                            registry=registry)
        self.objective = Gauge(names.M_OP_AVAILABILITY_OBJECTIVE,
                               "The availability objective: the share of stream requests that must find ready "
                               "capacity.", LABELS, registry=registry)
        self.availability = Gauge(names.M_OP_AVAILABILITY,
                                  "Share of stream requests admitted over the error budget's window (30 days).",
                                  LABELS, registry=registry)
        self.budget_remaining = Gauge(names.M_OP_BUDGET_REMAINING,
                                      "Share of the 30-day error budget not spent (negative: overspent).", LABELS,
                                      registry=registry)
        self.burn_rate = Gauge(names.M_OP_BURN_RATE,
                               "Error budget burn rate over the window: the share refused for want of capacity "
                               "over the share the objective allows (1 spends the budget in 30 days).",
                               LABELS + ("window",), registry=registry)
        self.headroom = Gauge(names.M_OP_HEADROOM_SIGMAS,
                              "The forecast band's width the error budget set, in sigmas of the forecaster's "
                              "own errors.", LABELS, registry=registry)
        # prometheus_client appends _total to counters itself.
        self.fallbacks = Counter(names.M_OP_SCALER_FALLBACKS.removesuffix("_total"),
                                 "Scaler ticks spent scaling reactively because the forecast was "
                                 "unavailable, by reason.", LABELS + ("reason",), registry=registry)

    def record(self, namespace: str, pipeline: str, *, desired: int, ready: int, placeholders: int,
               forecast_streams: float | None, fallback_reason: str | None, spares: int = 0,
               upper_streams: float | None = None, band_coverage: float | None = None,
               band_target: float | None = None, availability: Mapping[str, float | None] | None = None) -> None:
        key = (namespace, pipeline)
        a = availability or {}
        for gauge, value in ((self.objective, a.get("objective")), (self.availability, a.get("achieved")),
                             (self.budget_remaining, a.get("remaining")), (self.headroom, a.get("sigmas"))):
            if value is not None:
                gauge.labels(*key).set(value)
            else:
                _drop(gauge, key)
        for window in BURN_WINDOWS:
            rate = a.get(f"burn_{window}")
            if rate is not None:
                self.burn_rate.labels(*key, window).set(rate)
            else:
                _drop(self.burn_rate, key + (window,))
        self.desired.labels(*key).set(desired)
        self.spares.labels(*key).set(spares)
        self.ready.labels(*key).set(ready)
        self.placeholders.labels(*key).set(placeholders)
        if forecast_streams is not None:
            self.forecast.labels(*key).set(forecast_streams)
        if fallback_reason:
            self.fallbacks.labels(*key, fallback_reason).inc()
        # The band's series go when there is no band to judge (no forecast this tick, too
        # short a record, a tier without a band): a stale coverage would keep an alert up.
        for gauge, value in ((self.upper, upper_streams), (self.coverage, band_coverage),
                             (self.coverage_target, band_target)):
            if value is not None:
                gauge.labels(*key).set(value)
            else:
                _drop(gauge, key)

    def forget(self, namespace: str, pipeline: str) -> None:
        for gauge in (self.forecast, self.desired, self.ready, self.placeholders, self.spares, self.upper,
                      self.coverage, self.coverage_target, self.objective, self.availability,
                      self.budget_remaining, self.headroom):
            _drop(gauge, (namespace, pipeline))
        for window in BURN_WINDOWS:
            _drop(self.burn_rate, (namespace, pipeline, window))
        for labels in [s.labels for m in self.fallbacks.collect() for s in m.samples]:
            if labels.get("namespace") == namespace and labels.get("pipeline") == pipeline:
                _drop(self.fallbacks, (namespace, pipeline, labels["reason"]))


def _drop(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    """Remove one labelled series; one already gone is fine."""
    try:
        metric.remove(*labels)
    except KeyError:
        pass


_default: OperatorMetrics | None = None


def default() -> OperatorMetrics:
    """The process-wide metrics on prometheus_client's default registry, which the
    operator's `--metrics-port` server exposes."""
    global _default
    if _default is None:
        _default = OperatorMetrics()
    return _default


def _ready(pods: Iterable[Mapping[str, Any]]) -> int:
    count = 0
    for pod in pods:
        conds = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds) \
                and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            count += 1
    return count


def record_tick(namespace: str, pipeline: str, result: Any, pods: Iterable[Mapping[str, Any]],
                metrics: OperatorMetrics | None = None) -> None:
    """One scaler tick (speechops.scaling.controller.TickResult) -> the gauges. A tick
    that could not forecast (scaling_active False) counts as a fallback; one held back by
    a HorizontalPodAutoscaler on the workers does not (its condition says so)."""
    decision = result.decision
    forecast = decision.forecast
    fell_back = not result.scaling_active and result.condition_reason != conditions.CONFLICTING_AUTOSCALER
    (metrics or default()).record(
        namespace, pipeline, desired=decision.replicas, ready=_ready(pods), placeholders=decision.reserve,
        spares=decision.replicas - decision.serving,
        forecast_streams=None if forecast is None else forecast.expected,
        upper_streams=None if forecast is None else forecast.upper,
        band_coverage=result.band_coverage, band_target=result.band_target, availability=result.availability,
        fallback_reason=result.condition_reason if fell_back else None)
