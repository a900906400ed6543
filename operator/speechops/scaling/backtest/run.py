"""One backtest: the speechops policy and its baselines replayed over a trace's demand on
the fleet model, tick by tick, through the operator's own tick (`controller.decide`, with
the same `Policy`, `SeasonalForecaster` and lead-time rule), scored past a warm-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np

from speechops.scaling import controller
from speechops.scaling.budget import HeadroomController
from speechops.scaling.backtest.baselines import Foresight, holt_winters, run_hpa, run_oracle
from speechops.scaling.backtest.fleet import Fleet
from speechops.scaling.backtest.options import Options
from speechops.scaling.backtest.report import (Result, against_targets, band_coverage, progress as _progress,
                                                ratio, unserved_episodes)
from speechops.scaling.backtest.trace import Trace, prepare
from speechops.scaling.forecast import SeasonalForecaster
from speechops.scaling.policy import LiveSignals, Policy, PolicyConfig

FORECASTER_OPTIONS: dict = {}   # overrides for tuning experiments
POLICY_OPTIONS: dict = {}


def policy_config(opts: Options, max_replicas: int) -> PolicyConfig:
    """The policy the operator would run with these options; the lead time as the operator
    sets it, with the modelled pod start as the measured one."""
    return PolicyConfig(mode="predictive", streams_per_replica=opts.capacity, target_utilization=opts.util,
                        min_replicas=1, max_replicas=max_replicas, scale_down_delay=opts.scale_down_delay,
                        scale_down_max_share=opts.scale_down_max_percent / 100.0,
                        scale_down_period=opts.scale_down_period,
                        lead_time=controller.lead_time(opts.lead, opts.start_delay),
                        headroom_sigmas=opts.headroom_sigmas, reserve_mode="none", **POLICY_OPTIONS)


def make_forecaster(kind: str, cfg: PolicyConfig, times: np.ndarray, demand: np.ndarray):
    if kind == "speechops":
        return SeasonalForecaster(lead=cfg.lead_time, band_sigmas=cfg.headroom_sigmas, **FORECASTER_OPTIONS)
    if kind == "holt-winters":
        return holt_winters(cfg.lead_time)
    if kind == "perfect":
        return Foresight(times, demand, cfg.lead_time)
    raise ValueError(kind)


def run_forecast_policy(name: str, kind: str, times: np.ndarray, arrivals: np.ndarray, demand: np.ndarray,
                        opts: Options, score_from: int, progress: bool = False, adaptive: bool = False) -> Result:
    """One forecasting policy over the trace. `adaptive`: the error budget moves the band
    (starting at opts.headroom_sigmas), as live; else the band stays at that width."""
    cfg = policy_config(opts, max_replicas=10**7)
    policy = Policy(cfg)
    forecaster = make_forecaster(kind, cfg, times, demand)
    headroom = HeadroomController(opts.availability, opts.headroom_sigmas) if adaptive else None
    fleet = Fleet(arrivals, opts, initial=max(cfg.need(demand[0]), 1))
    n = len(demand)
    res = Result(policy=name, capacity=np.zeros(n), forecast=np.zeros(n), upper=np.zeros(n))
    pod_ticks = unserved = demanded = 0.0
    previous_target = None
    for i in range(n):
        fleet.advance(i)
        now, d = float(times[i]), float(demand[i])
        forecaster.observe(now, d)
        ready_before = fleet.serving
        decision, forecast, _ = controller.decide(
            policy, LiveSignals(now=now, replicas=fleet.n_alive(), active_streams=d, ready_replicas=fleet.serving,
                                draining=fleet.n_holding()), forecaster, cfg.lead_time, headroom)
        fleet.apply(i, decision.serving, decision.replicas, d)
        if previous_target is not None and decision.replicas != previous_target and i >= score_from:
            res.scale_events += 1
        previous_target = decision.replicas
        held = fleet.draining_streams(i)
        # Pods taken back from draining serve from the next tick: the operator acts once a tick.
        cap = min(ready_before, fleet.serving) * opts.capacity
        short = max(d - held - cap, 0.0)
        if headroom is not None:
            headroom.record(now, d * opts.tick, short * opts.tick)   # what the gateways' counters would say
        res.capacity[i] = cap + held
        res.forecast[i], res.upper[i] = forecast.expected, forecast.upper
        if i >= score_from:
            unserved += short
            demanded += d
            pod_ticks += fleet.n_alive()
        _progress(name, i, n, progress)
    res.unserved_stream_minutes = unserved * opts.tick / 60.0
    res.demand_stream_minutes = demanded * opts.tick / 60.0
    res.pod_hours = pod_ticks * opts.tick / 3600.0
    res.headroom_sigmas = headroom.sigmas if headroom is not None else opts.headroom_sigmas
    return res


HINDSIGHT_MOST = 4.0      # sigmas: the widest fixed band the hindsight search tries
HINDSIGHT_STEP = 0.25     # and its resolution


class Hindsight:
    """The hindsight band: the cheapest fixed band width that, on this trace and known
    after the fact, meets an objective. Runs are kept by width, so several objectives on
    one trace share them; availability rises with the width, so each objective is a
    bisection between 0 and HINDSIGHT_MOST sigmas, to HINDSIGHT_STEP."""

    def __init__(self, times: np.ndarray, arrivals: np.ndarray, demand: np.ndarray, opts: Options, score_from: int):
        self.args = (times, arrivals, demand)
        self.opts, self.score_from = opts, score_from
        self.runs: dict[float, Result] = {}

    def run(self, sigmas: float) -> Result:
        if sigmas not in self.runs:
            self.runs[sigmas] = run_forecast_policy("hindsight-band", "speechops", *self.args,
                                                    replace(self.opts, headroom_sigmas=sigmas), self.score_from)
        return self.runs[sigmas]

    def meets(self, sigmas: float, objective: float) -> bool:
        achieved = self.run(sigmas).availability
        return achieved is None or achieved >= objective

    def band(self, objective: float) -> Result | None:
        """The cheapest run that meets `objective`; None when not even the widest does."""
        if self.meets(0.0, objective):
            lo = hi = 0.0
        elif not self.meets(HINDSIGHT_MOST, objective):
            return None
        else:
            lo, hi = 0.0, HINDSIGHT_MOST
            while hi - lo > HINDSIGHT_STEP + 1e-9:
                mid = round((lo + hi) / 2 / HINDSIGHT_STEP) * HINDSIGHT_STEP
                if mid in (lo, hi):
                    break
                lo, hi = (lo, mid) if self.meets(mid, objective) else (mid, hi)
        meeting = [r for k, r in self.runs.items() if k <= hi and self.meets(k, objective)]
        return min(meeting, key=lambda r: r.pod_hours)


def backtest(trace: Trace, opts: Options, progress: bool = False, hindsight: Hindsight | None = None,
             baselines: dict[str, Result] | None = None) -> dict:
    """The speechops policy (its band moved by the objective's error budget) against the
    hindsight band, the HPA, Holt-Winters, the oracle and a perfect forecast. `hindsight`
    and `baselines` let several objectives on one trace share their runs."""
    times, arrivals, demand, score_from = prepare(trace, opts)
    hindsight = hindsight or Hindsight(times, arrivals, demand, opts, score_from)
    if baselines is None:
        baselines = run_baselines(times, arrivals, demand, opts, score_from, progress)
    ours = run_forecast_policy("speechops", "speechops", times, arrivals, demand, opts, score_from, progress,
                               adaptive=True)
    band = hindsight.band(opts.availability)
    results = {"speechops": ours, **({"hindsight-band": band} if band is not None else {}), **baselines}
    hpa, oracle = results["hpa"], results["oracle"]
    lead = policy_config(opts, 1).lead_time    # what the policies ran with (at least a pod start + a tick)
    ratios, checks = against_targets(ours, band, opts.availability)
    ratios["pod_hours_vs_oracle"] = float(ratio(ours.pod_hours, oracle.pod_hours))
    ratios["pod_hours_vs_hpa"] = float(ratio(ours.pod_hours, hpa.pod_hours))
    # What the policy costs with no forecast error: the floor for speechops' pod-hours.
    ratios["perfect_forecast_pod_hours_vs_oracle"] = float(ratio(results["perfect-forecast"].pod_hours,
                                                                  oracle.pod_hours))
    return {
        "trace": trace.name, "step_seconds": trace.step, "ticks": len(demand), "scored_ticks": len(demand) - score_from,
        "mean_demand_streams": round(float(demand[score_from:].mean()), 2),
        "peak_demand_streams": round(float(demand[score_from:].max()), 2),
        "objective": opts.availability, "hindsight_most": HINDSIGHT_MOST,
        "options": asdict(opts),
        "results": {k: v.summary() for k, v in results.items()},
        "ratios": {k: (round(v, 6) if v is not None and math.isfinite(v) else None) for k, v in ratios.items()},
        "targets_met": checks, "all_targets_met": all(checks.values()),
        "speechops_unserved_episodes": unserved_episodes(times, demand, ours.capacity, score_from, opts, lead),
        "speechops_band": {"coverage": band_coverage(demand, ours.upper, score_from, int(round(lead / opts.tick)))},
        # For the plot; not part of the JSON.
        "_series": {"times": times, "demand": demand, "results": results, "scored_from": score_from, "lead": lead},
    }


def run_baselines(times: np.ndarray, arrivals: np.ndarray, demand: np.ndarray, opts: Options, score_from: int,
                  progress: bool = False) -> dict[str, Result]:
    """The policies that do not depend on the objective."""
    return {
        "holt-winters": run_forecast_policy("holt-winters", "holt-winters", times, arrivals, demand, opts,
                                            score_from, progress),
        "hpa": run_hpa(times, arrivals, demand, opts, score_from, progress),
        "oracle": run_oracle(demand, opts, score_from),
        "perfect-forecast": run_forecast_policy("perfect-forecast", "perfect", times, arrivals, demand, opts,
                                                score_from, progress),
    }
