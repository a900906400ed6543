"""One scaler tick: signals -> forecast -> policy -> decision, plus what to write back.

`tick()` does the Prometheus reads (through a `PrometheusSource`) and nothing else with
the outside world: the pods and their live stream counts come in as arguments, and the
result says what to patch (replicas, deletion costs, status, condition, event). The kopf
timer in `handlers.py` gathers the arguments and applies the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from speechops_contract import names
from speechops import conditions
from speechops_contract.api import PipelineSpec
from speechops.scaling.budget import HeadroomController
from speechops.scaling.forecast import Forecast, SeasonalForecaster, clean_history
from speechops.scaling.policy import (Decision, DrainPlan, LiveSignals, PodLoad, Policy, PolicyConfig,
                                      plan_replicas)
from speechops.scaling.signals import (STEP, GatewayReading, PrometheusSource, SignalError, first_ready,
                                       measured_start_time, pod_is_ready, queries_for)

TICK = 15.0      # seconds between decisions, live and in the backtest


def lead_time(configured: float, start_seconds: float | None) -> float:
    """How far ahead to forecast: pods must be ready when demand arrives, so at least one
    pod start (measured live, modelled in the backtest), in whole ticks, plus a tick."""
    return max(configured, math.ceil((start_seconds or 0.0) / TICK - 1e-9) * TICK + TICK)


def decide(policy: Policy, signals: LiveSignals, forecaster, lead: float,
           headroom: HeadroomController | None = None) -> tuple[Decision, Forecast | None, Forecast | None]:
    """The decision of one tick, live and in the backtest: the error budget sets the
    band's width (`headroom`; None: the forecaster's own), learning only once the
    forecaster can be judged (`SeasonalForecaster.judged`), the forecast one lead time ahead
    sizes the fleet, the one a tick ahead the part of it that serves. `forecaster` None:
    no forecast (reactive, or no history yet)."""
    forecast = near = None
    if headroom is not None:
        sigmas = headroom.update(signals.now, judged=bool(getattr(forecaster, "judged", False)))
        if forecaster is not None and hasattr(forecaster, "set_band"):
            # In steps of 0.05 sigma: a band that moved by less is the same band, and the
            # forecast made for the last observation still holds.
            forecaster.set_band(round(sigmas * 20) / 20)
    if forecaster is not None:
        forecast = forecaster.predict(signals.now, lead)
        near = forecaster.predict(signals.now, TICK)
    return policy.decide(signals, forecast, near), forecast, near


@dataclass
class ScalerState:
    """What one pipeline's scaler remembers between ticks (kopf's memo holds it)."""
    config: PolicyConfig
    policy: Policy
    forecaster: SeasonalForecaster | None = None
    fed_until: float = 0.0
    lead: float = 0.0
    recommended: int | None = None     # plan withheld: the last replicas recommended
    headroom: HeadroomController | None = None
    counters: dict[str, tuple[float, float]] = field(default_factory=dict)   # pod -> (admitted, refused)
    starts: dict[str, float] = field(default_factory=dict)                   # pod uid -> first start, s

    @classmethod
    def for_spec(cls, spec: PipelineSpec) -> "ScalerState":
        config = PolicyConfig.from_spec(spec)
        return cls(config=config, policy=Policy(config), headroom=_headroom(config))


def _headroom(config: PolicyConfig) -> HeadroomController:
    return HeadroomController(config.availability, config.headroom_sigmas)


CAPACITY_OVERSTATED = 2.0


@dataclass(frozen=True)
class TickResult:
    decision: Decision
    plan: DrainPlan
    lead: float
    scaling_active: bool
    condition_reason: str
    condition_message: str
    live_streams: float | None
    forecast: Forecast | None
    history_points: int = 0
    pod_loads: tuple[PodLoad, ...] = field(default=())
    # Why this tick's plan is not applied ("" = applied): a dry run, or another autoscaler
    # on the worker Deployment.
    withheld: str = ""
    # The band's live calibration: of the last day's forecasts, the share whose outcome came
    # at or below the band's top (None until an hour is scored), and the share the tier's
    # band is meant to cover (None for a tier without a band).
    band_coverage: float | None = None
    band_target: float | None = None
    # Worth an Event and a log line: the replicas change, or, when the plan is withheld,
    # the recommendation does (the fleet follows something else, so it differs from the
    # recommendation on most ticks).
    announce: bool = False
    # The availability objective and its error budget (availability_report).
    availability: Mapping[str, float | None] = field(default_factory=dict)
    # What the gateways measured a replica can hold within the tier's latency target (None:
    # not known), against what spec.capacity.streamsPerReplica says.
    measured_capacity: int | None = None
    streams_per_replica: int = 0

    def capacity_condition(self) -> tuple[bool, str, str] | None:
        """(status, reason, message) of CapacityAsMeasured, or None when nothing was measured.
        False when streamsPerReplica is over CAPACITY_OVERSTATED x the measured capacity: the
        scaler sizes the fleet by streamsPerReplica, so it plans too few pods and the
        gateways refuse what it thought they would hold."""
        m = self.measured_capacity
        if m is None:
            return None
        if self.streams_per_replica > CAPACITY_OVERSTATED * max(m, 1):
            return (False, "StreamsPerReplicaAboveMeasured",
                    f"spec.capacity.streamsPerReplica is {self.streams_per_replica}, but the gateways measured that a "
                    f"replica holds at most {m} streams within the tier's latency target: the scaler plans too few "
                    f"replicas and the rest are refused (over_capacity); lower streamsPerReplica towards {m}")
        return True, "WithinMeasured", (f"spec.capacity.streamsPerReplica {self.streams_per_replica} is within "
                                        f"{CAPACITY_OVERSTATED:g}x the {m} streams a replica measured it holds")

    @property
    def message(self) -> str:
        return f"{self.withheld}: {self.decision.message}" if self.withheld else self.decision.message

    def status_patch(self, now_rfc3339: str) -> dict[str, Any]:
        d = self.decision
        status: dict[str, Any] = {"desiredReplicas": d.replicas, "spareReplicas": d.replicas - d.serving,
                                  "placeholders": d.reserve,
                                  "activeStreams": None if self.live_streams is None else round(self.live_streams)}
        a = self.availability
        # Rounded to what a person reads: the headroom narrows a little every tick while the
        # budget is safe, and a status write per pipeline per tick adds up on the API server.
        if a:
            status["availability"] = {
                "objective": round(100 * a["objective"], 4),
                **({} if a["achieved"] is None else {"achieved": round(100 * a["achieved"], 3)}),
                **({} if a["remaining"] is None else {"budgetRemaining": round(100 * a["remaining"], 1)}),
                **({} if a["burn_1h"] is None else {"burnRate1h": round(a["burn_1h"], 1)}),
                "headroomSigmas": round(a["sigmas"], 1), "headroomLearning": bool(a["learning"])}
        if self.measured_capacity is not None:
            status["measuredStreamsPerReplica"] = self.measured_capacity
        if d.forecast is not None:
            f = d.forecast
            status["forecast"] = {
                "time": now_rfc3339, "horizon": f"{f.horizon:.0f}s", "expected": round(f.expected, 1),
                "upper": round(f.upper, 1), "lower": round(f.lower, 1), "desiredReplicas": d.replicas,
                "model": f.model, "reason": self.message,
            }
        return status


def status_changes(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `wanted` that differ from the pipeline's `current` status, so a tick
    that changes nothing writes nothing (a status write per pipeline every tick adds up on
    a busy API server). A forecast whose only change is its time is not new."""
    def same(key: str, old: Any, new: Any) -> bool:
        if key == "forecast" and isinstance(old, Mapping) and isinstance(new, Mapping):
            return {k: v for k, v in old.items() if k != "time"} == {k: v for k, v in new.items() if k != "time"}
        return old == new
    return {key: value for key, value in wanted.items() if not same(key, current.get(key), value)}


def state_for(memo: dict, spec: PipelineSpec) -> ScalerState:
    """The pipeline's state, rebuilt when the scaling-relevant spec changes."""
    config = PolicyConfig.from_spec(spec)
    state: ScalerState | None = memo.get("scaler")
    if state is None or state.config != config:
        old = state
        state = ScalerState.for_spec(spec)
        if old is not None:
            # The budget's record and the pods' counters outlive a spec change; the budget
            # is judged against the new objective.
            if old.headroom is not None:
                state.headroom.budget, state.headroom.acted = old.headroom.budget, old.headroom.acted
                state.headroom.judged_by(config.availability)
            state.counters, state.starts = old.counters, old.starts
        memo["scaler"] = state
    return state


def count_requests(state: ScalerState, now: float, gateways: Mapping[str, GatewayReading | None]) -> None:
    """This tick's stream requests, admitted and refused for want of capacity, from the
    gateways' counters (each pod's since the last tick; a counter that went down restarted
    from zero; a pod's first reading is its baseline), into the error budget."""
    demanded = unserved = 0.0
    for pod, reading in gateways.items():
        if reading is None:
            continue
        before = state.counters.get(pod)
        if before is not None:
            admitted = reading.admitted - before[0] if reading.admitted >= before[0] else reading.admitted
            refused = reading.refused - before[1] if reading.refused >= before[1] else reading.refused
            demanded += admitted + refused
            unserved += refused
        state.counters[pod] = (reading.admitted, reading.refused)
    for pod in set(state.counters) - set(gateways):
        del state.counters[pod]
    state.headroom.record(now, demanded, unserved)


def pod_loads(pods: Sequence[Mapping[str, Any]], streams: Mapping[str, float | None]) -> list[PodLoad]:
    loads = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue   # already going; the ReplicaSet no longer counts it
        name = meta["name"]
        draining = (meta.get("annotations") or {}).get(names.ANNOTATION_DRAINING) == "true"
        loads.append(PodLoad(name=name, streams=streams.get(name), ready=pod_is_ready(pod), draining=draining))
    return loads


def tick(state: ScalerState, spec: PipelineSpec, namespace: str, name: str, now: float,
         source: PrometheusSource | None, pods: Sequence[Mapping[str, Any]],
         pod_streams: Mapping[str, float | None], deployment_replicas: int | None = None,
         rival_autoscalers: Sequence[str] = (),
         gateways: Mapping[str, GatewayReading | None] | None = None) -> TickResult:
    """One tick. `rival_autoscalers`: HorizontalPodAutoscalers that scale the worker
    Deployment too; while one exists the scaler recommends only, as in a dry run, since
    two controllers writing one replica count undo each other every few seconds.
    `gateways`: each pod's gateway metrics (backlog and request counters), when read."""
    cfg = state.config
    gateways = gateways or {}
    if state.headroom is None:
        state.headroom = _headroom(cfg)
    count_requests(state, now, gateways)
    loads = pod_loads(pods, pod_streams)
    first_ready(pods, state.starts)
    lead = lead_time(cfg.lead_time, measured_start_time(state.starts.values()))
    if lead != state.lead:
        # The forecaster keeps its history: only what it is asked for moves.
        state.lead = lead
        if state.forecaster is not None:
            state.forecaster.set_lead(lead)

    live = backlog = measured = None
    forecaster = coverage = None
    active, reason, message = True, "Forecasting", ""
    points = 0
    if cfg.mode == "fixed":
        reason, message = "FixedReplicas", f"fixed mode: {cfg.min_replicas} replicas"
    elif source is None:
        active, reason, message = False, "PrometheusNotConfigured", "no Prometheus URL: scaling on live gateway metrics"
    else:
        try:
            q = queries_for(spec.scaling.queries, namespace, name)
            live = source.instant(q["streams"], "live streams")
            backlog = source.instant(q["backlog"], "backlog")
            try:   # informational: a gateway without the series must not stop the scaler
                measured = source.instant(q["capacity"], "measured capacity")
            except SignalError:
                measured = None
            if cfg.mode == "predictive":
                points = _feed_history(state, source, q["streams"], now, spec.scaling.history)
                if state.forecaster is not None and state.forecaster.observations:
                    forecaster = state.forecaster
                    coverage = forecaster.coverage()
                else:
                    active, reason, message = False, "NoHistory", "Prometheus has no history for this pipeline yet: scaling on live streams"
            else:
                reason, message = "Reactive", "reactive mode: live streams only"
        except SignalError as exc:
            active, reason, message = False, exc.reason, exc.message
            live = backlog = None

    # Fall back to the gateways' own counts when Prometheus had nothing; only when every
    # ready pod answered, or a silent pod would count as empty and release capacity.
    ready_loads = [p for p in loads if p.ready]
    if live is None and ready_loads and all(p.streams is not None for p in ready_loads):
        live = float(sum(p.streams for p in ready_loads))
        if backlog is None and all(gateways.get(p.name) is not None for p in ready_loads):
            backlog = float(sum(gateways[p.name].backlog for p in ready_loads))
        if not active:
            message += "; using the gateways' live stream counts"
    elif live is None and not active:
        message += "; no live stream counts either: holding replicas"

    # The fleet's size is the Deployment's .spec.replicas, as the HPA takes it: the pods
    # can be fewer (not made yet) or more (a rollout's surge), and holding a count with
    # surge in it raises the replicas on every tick.
    fleet = len(loads) if deployment_replicas is None else deployment_replicas
    signals = LiveSignals(now=now, replicas=fleet, active_streams=live, backlog_chunks=backlog,
                          ready_replicas=sum(1 for p in loads if p.ready and not p.draining),
                          deployment_replicas=deployment_replicas,
                          draining=sum(1 for p in loads if p.draining and p.streams != 0))
    decision, forecast, _ = decide(state.policy, signals, forecaster, lead,
                                   state.headroom if cfg.mode == "predictive" else None)
    if forecast is not None:
        span = forecast.history / 3600
        message = (f"forecasting from {span:.1f}h of history ({forecast.model})"
                   if span >= 24 else f"partial history ({span:.1f}h): seasonal profile not used yet")
    plan = plan_replicas(loads, decision.serving, decision.replicas)
    withheld = ""
    if spec.scaling.dry_run:
        withheld = "dry run, not applied"
        message = f"{message or decision.message}; dryRun: recommending only, nothing applied"
    elif rival_autoscalers:
        rivals = ", ".join(sorted(rival_autoscalers))
        worker = names.worker_deployment(name)
        withheld = f"not applied, HorizontalPodAutoscaler {rivals} scales {worker}"
        active, reason = False, conditions.CONFLICTING_AUTOSCALER
        message = (f"HorizontalPodAutoscaler {rivals} also scales {worker}: recommending only until it is "
                   f"deleted (or set spec.scaling.dryRun: true to keep it)")
    if withheld:
        announce = decision.replicas != (decision.previous if state.recommended is None else state.recommended)
        state.recommended = decision.replicas
    else:
        announce, state.recommended = decision.changed, None
    return TickResult(decision=decision, plan=plan, lead=lead, scaling_active=active, condition_reason=reason,
                      condition_message=message or decision.message, live_streams=live, forecast=forecast,
                      history_points=points, pod_loads=tuple(loads), withheld=withheld, announce=announce,
                      band_coverage=None if coverage is None else coverage[0],
                      band_target=state.forecaster.quantile if forecast is not None
                      and state.forecaster.band_sigmas > 0 else None,
                      availability=availability_report(state.headroom),
                      measured_capacity=None if measured is None else int(measured),
                      streams_per_replica=spec.capacity.streams_per_replica)


def availability_report(headroom: HeadroomController) -> dict[str, float | None]:
    """The objective, what was achieved over the budget's window, the budget left, burn
    rates (all counting every refusal) and the band's width now, and whether the budget
    moves it yet: for status, metrics and the condition."""
    b = headroom.budget
    achieved, remaining = b.availability(), b.remaining()
    return {"objective": b.objective, "achieved": achieved, "remaining": remaining,
            "sigmas": headroom.sigmas, "learning": headroom.learning,
            **{f"burn_{w}": r for w, r in headroom.burn_rates().items()}}


def _feed_history(state: ScalerState, source: PrometheusSource, query: str, now: float, history: float) -> int:
    """The full history on the first tick, then only what is new since the last one."""
    if state.forecaster is None:
        state.forecaster = SeasonalForecaster(lead=state.lead, band_sigmas=state.config.headroom_sigmas)
        start = now - history
    else:
        start = state.fed_until + STEP
    end = math.floor(now / STEP) * STEP
    if end < start:
        return 0
    times, values = clean_history(*source.history(query, start, end))
    state.forecaster.observe_many(times, values)
    if len(times):
        state.fed_until = float(times[-1])
    return len(times)
