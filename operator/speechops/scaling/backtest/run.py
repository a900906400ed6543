"""One backtest: the speechops policy and its baselines replayed over a trace's demand on
the fleet model, tick by tick, through the operator's own tick (`controller.decide`, with
the same `Policy`, `SeasonalForecaster` and lead-time rule), scored past a warm-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from speechops.scaling import controller
from speechops.scaling.backtest.baselines import Foresight, holt_winters, run_hpa, run_oracle
from speechops.scaling.backtest.fleet import Fleet
from speechops.scaling.backtest.options import Options
from speechops.scaling.backtest.report import (Result, against_targets, band_coverage, progress as _progress,
                                                ratio, unserved_episodes)
from speechops.scaling.backtest.trace import Trace, prepare
from speechops.scaling.forecast import SeasonalForecaster, band_quantile
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
                        opts: Options, score_from: int, progress: bool = False) -> Result:
    cfg = policy_config(opts, max_replicas=10**7)
    policy = Policy(cfg)
    forecaster = make_forecaster(kind, cfg, times, demand)
    fleet = Fleet(arrivals, opts, initial=max(cfg.need(demand[0]), 1))
    n = len(demand)
    res = Result(policy=name, capacity=np.zeros(n), forecast=np.zeros(n), upper=np.zeros(n))
    pod_ticks = unserved = 0.0
    previous_target = None
    for i in range(n):
        fleet.advance(i)
        now, d = float(times[i]), float(demand[i])
        forecaster.observe(now, d)
        ready_before = fleet.serving
        decision, forecast, _ = controller.decide(
            policy, LiveSignals(now=now, replicas=fleet.n_alive(), active_streams=d, ready_replicas=fleet.serving,
                                draining=fleet.n_holding()), forecaster, cfg.lead_time)
        fleet.apply(i, decision.serving, decision.replicas, d)
        if previous_target is not None and decision.replicas != previous_target and i >= score_from:
            res.scale_events += 1
        previous_target = decision.replicas
        held = fleet.draining_streams(i)
        # Pods taken back from draining serve from the next tick: the operator acts once a tick.
        cap = min(ready_before, fleet.serving) * opts.capacity
        res.capacity[i] = cap + held
        res.forecast[i], res.upper[i] = forecast.expected, forecast.upper
        if i >= score_from:
            unserved += max(d - held - cap, 0.0)
            pod_ticks += fleet.n_alive()
        _progress(name, i, n, progress)
    res.unserved_stream_minutes = unserved * opts.tick / 60.0
    res.pod_hours = pod_ticks * opts.tick / 3600.0
    return res


def backtest(trace: Trace, opts: Options, progress: bool = False) -> dict:
    times, arrivals, demand, score_from = prepare(trace, opts)
    results = {
        "speechops": run_forecast_policy("speechops", "speechops", times, arrivals, demand, opts, score_from, progress),
        "holt-winters": run_forecast_policy("holt-winters", "holt-winters", times, arrivals, demand, opts,
                                            score_from, progress),
        "hpa": run_hpa(times, arrivals, demand, opts, score_from, progress),
        "oracle": run_oracle(demand, opts, score_from),
        "perfect-forecast": run_forecast_policy("perfect-forecast", "perfect", times, arrivals, demand, opts,
                                                score_from, progress),
    }
    ours, hpa, oracle = results["speechops"], results["hpa"], results["oracle"]
    lead = policy_config(opts, 1).lead_time    # what the policies ran with (at least a pod start + a tick)
    ratios, checks = against_targets(ours, hpa, oracle)
    # What the policy costs with no forecast error: the floor for speechops' pod-hours.
    ratios["perfect_forecast_pod_hours_vs_oracle"] = float(ratio(results["perfect-forecast"].pod_hours,
                                                                  oracle.pod_hours))
    return {
        "trace": trace.name, "step_seconds": trace.step, "ticks": len(demand), "scored_ticks": len(demand) - score_from,
        "mean_demand_streams": round(float(demand[score_from:].mean()), 2),
        "peak_demand_streams": round(float(demand[score_from:].max()), 2),
        "options": asdict(opts),
        "results": {k: v.summary() for k, v in results.items()},
        "ratios": {k: (round(v, 4) if math.isfinite(v) else None) for k, v in ratios.items()},
        "targets_met": checks, "all_targets_met": all(checks.values()),
        "speechops_unserved_episodes": unserved_episodes(times, demand, ours.capacity, score_from, opts, lead),
        "speechops_band": {"coverage": band_coverage(demand, ours.upper, score_from, int(round(lead / opts.tick))),
                           "target": round(band_quantile(opts.headroom_sigmas), 4)},
        # For the plot; not part of the JSON.
        "_series": {"times": times, "demand": demand, "results": results, "scored_from": score_from, "lead": lead},
    }
