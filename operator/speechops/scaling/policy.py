"""From a forecast and live signals to replicas: the one decision the operator and the
backtest share.

Rules, in order:
1. fixed mode: minReplicas, nothing else.
2. predictive: the expected demand at now + lead at targetUtilization, and the upper band
   at (nearly) full capacity: max(ceil(expected / (streamsPerReplica x targetUtilization)),
   ceil(upper / (streamsPerReplica x 0.9))). The issue's formula, ceil(upper / (streamsPerReplica x
   targetUtilization)), pays for uncertainty twice (the band and the utilization headroom
   both cover forecast error), at a large cost in pod-hours for a little unserved time
   (docs/benchmarks/). `band_at_full_capacity=False` restores it.
   reactive (or predictive without a forecast): ceil(live / (streamsPerReplica x util)).
3. never below what live streams and backlog need now; clamped to min/max.
4. scale up at once; scale down only to the highest recommendation of the last
   scaleDownDelay (the HPA's stabilisation window), so a dip does not release pods that
   the next minute needs.
5. never more than scaleDownMaxPercent below the highest target of the last
   scaleDownPeriod (the HPA's scale-down policy of type Percent). Traffic that collapses
   within minutes is more often an upstream outage than real quiet, and when it ends every
   client reconnects at once. A slow decline (a daily cycle) never reaches the limit.
6. no data at all: hold the current replicas; never scale down (or to zero) on missing data.
7. warm spares (predictive): of those replicas, only what the next tick needs serves
   (live streams, and the forecast one tick ahead with its band); the rest are drained and
   kept. A drained pod empties as its streams end, so when the fleet shrinks it goes at
   once instead of a stream duration later, and when demand rises it serves again at the
   next tick. The backtest reports (docs/benchmarks/) measure what this saves.

Which pods go on scale-down is `plan_replicas`: drain first, remove only when empty.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from speechops_contract.api import Capacity, PipelineSpec, Reserve, Scaling, Streams
from speechops_contract.catalog import VAD_CHUNK
from speechops_contract.profiles import profile as tier
from speechops.scaling.forecast import Forecast

# The gateways count their backlog in VAD chunks (512 samples, 32 ms at 16 kHz): a
# backlog of sample_rate / 512 chunks is one stream-second of audio a pod could not keep
# up with.
CHUNKS_PER_STREAM_SECOND = Streams.sample_rate / VAD_CHUNK
_DEFAULT_TIER = tier(PipelineSpec.profile)


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's settings. Every default is the SpeechPipeline API's (speechops_contract.api
    and the default tier), so a policy built without a spec decides as a spec that sets
    nothing would; the fields below `reserve_share` are the policy's own."""
    mode: str = Scaling.mode          # predictive | reactive | fixed
    streams_per_replica: int = Capacity.streams_per_replica
    target_utilization: float = Capacity.target_utilization
    min_replicas: int = Capacity.min_replicas
    max_replicas: int = Capacity.max_replicas
    scale_down_delay: float = Scaling.scale_down_delay
    lead_time: float = Scaling.lead_time
    headroom_sigmas: float = _DEFAULT_TIER.headroom_sigmas
    reserve_mode: str = Reserve.mode  # auto | fixed | none
    reserve_count: int = Reserve.count
    reserve_share: float = _DEFAULT_TIER.reserve_share
    scale_down_max_share: float = Scaling.scale_down_max_percent / 100.0   # of the period's highest target
    scale_down_period: float = Scaling.scale_down_period
    availability: float = _DEFAULT_TIER.availability   # the objective, a share
    # True: the expected demand is planned at targetUtilization and the upper band at
    # full capacity (the headroom utilization leaves is what the band first uses up).
    # False: the upper band at targetUtilization, paying that headroom twice.
    band_at_full_capacity: bool = True
    # Utilization at which the upper band is planned when band_at_full_capacity: a little
    # under 1 keeps a margin for the step changes no forecast saw coming.
    band_utilization: float = 0.9
    # Like the HPA's tolerance: no scale-up for a forecast within this share above the
    # target while the running pods' full capacity still holds the upper band. A noisy
    # forecast otherwise adds a pod per wiggle, and each costs a window plus a drain.
    tolerance: float = 0.1
    # Serve with what the next tick needs and keep the rest of the forecast's pods drained
    # as warm spares (plan_replicas): they empty while still wanted, so a scale-down frees
    # them at once. False: every pod the forecast wants serves.
    warm_spares: bool = True

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> "PolicyConfig":
        p = tier(spec.profile)
        return cls(mode=spec.scaling.mode, streams_per_replica=spec.capacity.streams_per_replica,
                   target_utilization=spec.capacity.target_utilization,
                   min_replicas=spec.capacity.min_replicas, max_replicas=spec.capacity.max_replicas,
                   scale_down_delay=spec.scaling.scale_down_delay, lead_time=spec.scaling.lead_time,
                   scale_down_max_share=spec.scaling.scale_down_max_percent / 100.0,
                   scale_down_period=spec.scaling.scale_down_period,
                   headroom_sigmas=p.headroom_sigmas, reserve_mode=spec.reserve.mode,
                   reserve_count=spec.reserve.count, reserve_share=p.reserve_share,
                   availability=spec.availability)

    @property
    def streams_per_target(self) -> float:
        return self.streams_per_replica * self.target_utilization

    def need(self, streams: float) -> int:
        # The small epsilon keeps 12.8 / 12.8 from becoming 2 through rounding noise.
        return max(int(math.ceil(streams / self.streams_per_target - 1e-9)), 0)

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


@dataclass(frozen=True)
class LiveSignals:
    now: float                         # unix seconds
    replicas: int                      # worker pods now: serving, starting, draining and spares
    active_streams: float | None       # None: unknown (gateway metrics unreachable)
    backlog_chunks: float | None = None  # audio chunks received, not yet through VAD
    ready_replicas: int | None = None
    deployment_replicas: int | None = None  # the worker Deployment's .spec.replicas: pods it still has to make
    draining: int = 0                  # of `replicas`, pods draining that still hold streams


@dataclass(frozen=True)
class Decision:
    replicas: int                      # worker pods wanted in all (serving, starting, draining, spares)
    previous: int
    reserve: int                       # placeholder pods
    reason: str                        # CamelCase, the same as the Event's
    message: str
    forecast: Forecast | None
    forecast_need: int | None
    live_need: int | None
    serving: int                       # of `replicas`, the ready pods taking new streams; the rest are spares

    @property
    def changed(self) -> bool:
        return self.replicas != self.previous


class Policy:
    """Stateful only for the scale-down window; everything else comes in as arguments."""

    def __init__(self, config: PolicyConfig):
        self.config = config
        self._window: deque[tuple[float, int]] = deque()
        self._targets: deque[tuple[float, int]] = deque()   # for the scale-down limit
        self._started: float | None = None
        self._last: int | None = None                       # the last target
        self._reserve = 0

    def forecast_need(self, forecast: Forecast) -> int:
        cfg = self.config
        if not cfg.band_at_full_capacity:
            return cfg.need(forecast.upper)
        at_capacity = max(int(math.ceil(forecast.upper / (cfg.streams_per_replica * cfg.band_utilization) - 1e-9)), 0)
        return max(cfg.need(forecast.expected), at_capacity)

    def live_need(self, signals: LiveSignals) -> int | None:
        if signals.active_streams is None:
            return None
        streams = max(signals.active_streams, 0.0)
        if signals.backlog_chunks:
            streams += max(signals.backlog_chunks, 0.0) / CHUNKS_PER_STREAM_SECOND
        return self.config.need(streams)

    def decide(self, signals: LiveSignals, forecast: Forecast | None, near: Forecast | None = None) -> Decision:
        """`forecast`: demand at now + lead time, which sizes the fleet. `near`: demand one
        tick ahead, which sizes the part of it that serves (warm spares)."""
        cfg = self.config
        now, current = signals.now, self._fleet_now(signals)
        live = self.live_need(signals)
        f_need = self.forecast_need(forecast) if forecast is not None else None

        if cfg.mode == "fixed":
            target = cfg.clamp(cfg.min_replicas)
            return self._decision(target, current, self._fixed_reserve(), "Fixed",
                                  f"fixed mode: {target} replicas", forecast, f_need, live)

        if cfg.mode == "predictive" and f_need is not None:
            raw, basis = max(f_need, live or 0), ("forecast" if f_need >= (live or 0) else "live")
        elif live is not None:
            raw, basis = live, "live"
        else:
            # Nothing to go on: keep what runs or is being started (a new pipeline has a
            # Deployment before it has pods), never below minReplicas. Missing data must
            # never release pods.
            self._reserve = self._reserve if cfg.reserve_mode == "auto" else self._fixed_reserve()
            held = cfg.clamp(max(current, signals.deployment_replicas or 0))
            return self._decision(held, current, self._reserve, "NoData",
                                  f"no forecast and no live streams: holding {held} replicas",
                                  forecast, f_need, live)
        if (raw > current and basis == "forecast" and forecast is not None
                and forecast.upper <= current * cfg.streams_per_replica
                and forecast.expected <= current * cfg.streams_per_target * (1 + cfg.tolerance)
                and (live or 0) <= current):
            raw = current
        raw = cfg.clamp(raw)
        if live is not None:
            raw = max(raw, min(live, cfg.max_replicas))

        # Stabilisation: scale down only to the highest recommendation of the last window.
        if self._started is None:
            self._started = now
        self._window.append((now, raw))
        while self._window and self._window[0][0] < now - cfg.scale_down_delay:
            self._window.popleft()
        ceiling = max(r for _, r in self._window)
        if raw >= current:
            target = raw
        elif now - self._started < cfg.scale_down_delay:
            target = current    # too early to know the window: scale down only after a full one
        else:
            target = min(max(ceiling, raw), current)
        wanted = target
        target = max(target, self._scale_down_floor(now, current, target))

        reserve = self._reserve_for(forecast)
        serving = target
        if cfg.warm_spares and cfg.mode == "predictive" and near is not None:
            serving = min(target, max(self.forecast_need(near), live or 0, cfg.min_replicas))
        what = self._what(forecast, live, basis)
        if target > current:
            reason, msg = "ScaleUp", f"{what}: scaling {current}→{target}"
        elif target < current:
            reason, msg = "ScaleDown", f"{what}: scaling {current}→{target}"
            if target > wanted:
                msg += f" (wants {wanted}; {self._limit_text()})"
        elif wanted < current:
            reason, msg = "ScaleDownLimited", f"{what}: holding {current} (wants {wanted}; {self._limit_text()})"
        elif raw < current:
            reason, msg = "ScaleDownDelayed", f"{what}: holding {current} (wants {raw}; scaleDownDelay {cfg.scale_down_delay:g}s)"
        else:
            reason, msg = "Steady", f"{what}: {current} replicas"
        if serving < target:
            spares = target - serving
            msg += f", {spares} of them {'a warm spare' if spares == 1 else 'warm spares'}"
        return self._decision(target, current, reserve, reason, msg, forecast, f_need, live, serving)

    def _fleet_now(self, signals: LiveSignals) -> int:
        """The fleet as the last target left it: every pod, except draining pods with streams
        beyond that target, which leave once empty (a scale-down is decided once, not again
        on every tick until they have). Before a first target: every pod."""
        if self._last is None:
            return signals.replicas
        return min(signals.replicas, max(self._last, signals.replicas - signals.draining))

    def _scale_down_floor(self, now: float, current: int, target: int) -> int:
        """The fewest replicas the scale-down limit allows now; records `target`. The first
        call counts the running replicas as the period's peak, so an operator restart does
        not forget them."""
        cfg = self.config
        if not self._targets:
            self._targets.append((now, current))
        while len(self._targets) > 1 and self._targets[0][0] < now - cfg.scale_down_period:
            self._targets.popleft()
        peak = self._peak()
        floor = min(peak - math.floor(cfg.scale_down_max_share * peak + 1e-9), current)
        self._targets.append((now, max(target, floor)))
        return floor

    def _peak(self) -> int:
        return max(t for _, t in self._targets)

    def _limit_text(self) -> str:
        cfg = self.config
        return (f"scaleDownMaxPercent lets at most {cfg.scale_down_max_share * 100:g}% of the last "
                f"{cfg.scale_down_period:g}s' peak of {self._peak()} go")

    def _what(self, forecast: Forecast | None, live: int | None, basis: str) -> str:
        if forecast is not None and self.config.mode == "predictive":
            at = time.strftime("%H:%M", time.gmtime(forecast.at))
            text = (f"forecast {forecast.expected:.0f} streams at {at} (lead {forecast.horizon:.0f}s, "
                    f"band {forecast.lower:.0f}–{forecast.upper:.0f})")
            if basis == "live":
                text += f", live streams need {live}"
            return text
        return f"live streams need {live} replicas"

    def _fixed_reserve(self) -> int:
        return self.config.reserve_count if self.config.reserve_mode == "fixed" else 0

    def _reserve_for(self, forecast: Forecast | None) -> int:
        cfg = self.config
        if cfg.reserve_mode != "auto":
            self._reserve = self._fixed_reserve()
        elif forecast is not None:
            # Placeholders hold warm nodes for the part of the band a tier wants covered.
            self._reserve = int(math.ceil(cfg.reserve_share * forecast.band / cfg.streams_per_target - 1e-9))
        return self._reserve

    def _decision(self, target: int, current: int, reserve: int, reason: str, message: str,
                  forecast: Forecast | None, f_need: int | None, live: int | None,
                  serving: int | None = None) -> Decision:
        self._last = target
        return Decision(replicas=target, previous=current, reserve=reserve, reason=reason, message=message,
                        forecast=forecast, forecast_need=f_need, live_need=live,
                        serving=target if serving is None else serving)


# -- which pods go: drain first, remove when empty ------------------------------------

@dataclass(frozen=True)
class PodLoad:
    name: str
    streams: float | None      # live streams on the pod; None if its gateway did not answer
    ready: bool
    draining: bool


@dataclass(frozen=True)
class DrainPlan:
    replicas: int                          # what the Deployment's .spec.replicas must be
    drain: tuple[str, ...]                 # pods to tell to drain now
    remove: tuple[str, ...]                # pods Kubernetes may delete now (lowest cost)
    costs: dict[str, int] = field(default_factory=dict)   # pod -> pod-deletion-cost
    undrain: tuple[str, ...] = ()          # draining pods to take back into service


REMOVABLE_COST = -1000        # empty and draining (or never ready): deleted first
DRAINING_COST = 1_000_000     # draining with streams: must not be picked before it empties


def plan_replicas(pods: Sequence[PodLoad], serving_target: int, keep_target: int | None = None) -> DrainPlan:
    """The Deployment's replicas, the pods to drain, undrain and remove so that
    `serving_target` ready pods take new streams, `keep_target` pods run in all, and no
    stream is cut.

    Pods beyond the serving target are drained even while the fleet keeps them: a drained
    pod takes no new streams, so its streams end and it empties while it is still wanted
    (a warm spare). When the fleet shrinks, spares go at once, where a pod drained only
    then would take a whole stream duration to empty; when demand rises, a spare is taken
    back at once (`POST /undrain`) instead of one pod start later.

    Serving side: too few ready pods serving, and draining pods come back, those with the
    most streams first (they were the slowest to empty), empty spares last. Too many, and
    the ready pods with the fewest streams drain. A pod whose gateway did not answer counts
    as full, so it is neither drained nor removed.

    Fleet side: more pods than `keep_target`, and the removable ones go: draining pods whose
    gateway is gone (not ready and silent), then empty spares, then pods not ready yet
    (they hold no streams). A draining pod with streams stays until it empties. Fewer, and
    the Deployment makes new pods: replicas = pods - removed + missing. Without
    `keep_target` the fleet keeps only the serving target (no spares)."""
    keep_target = serving_target if keep_target is None else max(keep_target, serving_target)
    serving = [p for p in pods if not p.draining]
    draining = [p for p in pods if p.draining]
    ready = [p for p in serving if p.ready]

    def load(p: PodLoad) -> float:
        return math.inf if p.streams is None else p.streams

    def gone(p: PodLoad) -> bool:
        return p.streams is None and not p.ready

    revivable = sorted((p for p in draining if not gone(p)), key=lambda p: (-load(p), p.name))
    starting = sorted((p.name for p in serving if not p.ready), reverse=True)
    counts = plan_counts(ready=len(ready), answered=sum(p.streams is not None for p in ready),
                         holding=sum(p.streams != 0 for p in revivable), spares=sum(p.streams == 0 for p in revivable),
                         starting=len(starting), gone=len(draining) - len(revivable),
                         serving_target=serving_target, keep_target=keep_target)
    # Those with the most streams back first, the fewest drained first (answered ones only).
    undrain = [p.name for p in revivable[:counts.undrain]]
    drain = [p.name for p in sorted(ready, key=lambda p: (load(p), p.name))[:counts.drain]]
    spares = sorted(p.name for p in draining if p.streams == 0 and p.name not in undrain)
    remove = [p.name for p in draining if gone(p)] + spares[:counts.remove_spares] + starting[:counts.remove_starting]

    costs: dict[str, int] = {}
    for p in pods:
        if p.name in remove:
            costs[p.name] = REMOVABLE_COST
        elif p.name in drain or (p.draining and p.name not in undrain and p.streams != 0):
            costs[p.name] = DRAINING_COST + int(load(p) if p.streams is not None else 0)
        else:
            costs[p.name] = int(min(load(p), DRAINING_COST - 1))
    return DrainPlan(replicas=len(pods) - len(remove) + counts.start, drain=tuple(drain), remove=tuple(remove),
                     costs=costs, undrain=tuple(undrain))


@dataclass(frozen=True)
class PlanCounts:
    undrain: int            # draining pods taken back, those holding streams first
    drain: int              # ready serving pods told to drain
    remove_spares: int      # drained, empty pods removed
    remove_starting: int    # pods not ready yet removed (they hold no streams)
    start: int              # new pods


def plan_counts(*, ready: int, answered: int, holding: int, spares: int, starting: int, gone: int,
                serving_target: int, keep_target: int) -> PlanCounts:
    """How many pods `plan_replicas` takes back, drains, removes and starts, from counts
    alone: the one rule the operator applies to named pods and the backtest's fleet to
    counts. `ready`: ready serving pods, `answered` of them with a live stream count;
    `holding`: draining pods with streams; `spares`: draining and empty; `starting`: not
    ready yet; `gone`: draining pods whose gateway is gone (always removed)."""
    keep_target = max(keep_target, serving_target)
    undrain = min(max(serving_target - ready, 0), holding + spares)
    drain = min(max(ready - serving_target, 0), answered)
    # Spares taken back are no longer spares; holding pods are taken back first.
    spares_left = spares - max(undrain - holding, 0)
    over = max(ready + holding + spares + starting - keep_target, 0)
    remove_spares = min(over, spares_left)
    remove_starting = min(over - remove_spares, starting)
    alive = ready + holding + spares + starting - remove_spares - remove_starting
    return PlanCounts(undrain=undrain, drain=drain, remove_spares=remove_spares, remove_starting=remove_starting,
                      start=max(keep_target - alive, 0))
