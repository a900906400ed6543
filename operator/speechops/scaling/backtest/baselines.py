"""The policies speechops is judged against, on the same fleet model and demand:

- the Kubernetes HPA algorithm (`run_hpa`): removes pods without draining;
- a Predictive-HPA-style Holt-Winters forecaster with a 2-sigma band (`holt_winters`),
  drain-aware, run through the same tick as speechops;
- the oracle (`run_oracle`): perfect foresight, each pod started one delay early;
- `Foresight`, the yardstick: the speechops policy fed the true future demand, which splits
  speechops' gap to the oracle into what the policy costs and what forecast error costs.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from speechops.scaling.backtest.fleet import Fleet
from speechops.scaling.backtest.options import Options
from speechops.scaling.backtest.report import Result, progress as _progress
from speechops.scaling.forecast import Forecast, HoltWintersForecaster


class Foresight:
    """The true demand one lead time ahead, with no band: the speechops policy with no
    forecast error. Its gap to the oracle is what the policy itself costs (whole pods, the
    scale-down delay, drains that never cut a stream); the rest of speechops' gap is the
    forecast's. A yardstick for the backtest, never used live."""

    def __init__(self, times: np.ndarray, demand: np.ndarray, lead: float):
        self.times, self.demand, self.lead = times, demand, lead

    def observe(self, t: float, value: float) -> None:
        pass

    def predict(self, now: float, horizon: float | None = None) -> Forecast:
        horizon = self.lead if horizon is None else horizon
        i = min(int(np.searchsorted(self.times, now + horizon)), len(self.demand) - 1)
        value = float(self.demand[i])
        return Forecast(at=now + horizon, horizon=horizon, expected=value, upper=value, lower=value,
                        model="perfect", history=0.0)


def holt_winters(lead: float) -> HoltWintersForecaster:
    return HoltWintersForecaster(lead=lead, band_sigmas=2.0)


def run_hpa(times: np.ndarray, arrivals: np.ndarray, demand: np.ndarray, opts: Options, score_from: int,
            progress: bool = False) -> Result:
    """The HPA's replica calculator on the full demand: 15 s sync, 10% tolerance, scale-up
    at most max(+100%, +4 pods) per sync, 300 s scale-down stabilisation, no drain."""
    target = opts.capacity * opts.util
    fleet = Fleet(arrivals, opts, initial=max(int(math.ceil(demand[0] / target)), 1))
    n = len(demand)
    res = Result(policy="hpa", capacity=np.zeros(n))
    window: deque[tuple[int, int]] = deque()
    window_ticks = int(round(300.0 / opts.tick))
    pod_ticks = unserved = cut = 0.0
    for i in range(n):
        fleet.advance(i)
        d = float(demand[i])
        current = fleet.serving + fleet.n_starting()
        ready = fleet.serving
        # Usage is averaged over ready pods; pods not ready yet count as empty on scale-up.
        ratio = d / (max(ready, 1) * target)
        if abs(ratio - 1.0) <= 0.1:
            recommended = current
        else:
            recommended = max(int(math.ceil(d / target)), 1)
            if recommended > current and ready < current:
                # Re-check with unready pods counted at zero usage: no scale-up if it flips.
                if d / (current * target) <= 1.0 + 0.1:
                    recommended = current
        window.append((i, recommended))
        while window[0][0] <= i - window_ticks:
            window.popleft()
        if recommended > current:
            desired = min(recommended, max(2 * current, current + 4))
        else:
            desired = min(max(r for _, r in window), current)
        if desired != current:
            removed = fleet.set_target(i, desired, d)
            if i >= score_from:
                cut += removed
                res.scale_events += 1
        cap = fleet.serving * opts.capacity
        res.capacity[i] = cap
        if i >= score_from:
            unserved += max(d - cap, 0.0)
            pod_ticks += fleet.serving + fleet.n_starting()
        _progress("hpa", i, n, progress)
    res.unserved_stream_minutes = unserved * opts.tick / 60.0
    res.demand_stream_minutes = float(demand[score_from:].sum()) * opts.tick / 60.0
    res.pod_hours = pod_ticks * opts.tick / 3600.0
    res.streams_cut = cut
    return res


def run_oracle(demand: np.ndarray, opts: Options, score_from: int) -> Result:
    """Perfect foresight: ceil(demand / (capacity x util)) ready pods at every tick, each
    started one delay early (a pod needed again within a delay is simply kept)."""
    need = np.ceil(demand / (opts.capacity * opts.util) - 1e-9)
    delay = max(int(math.ceil(opts.start_delay / opts.tick)), 0)
    alive = need.copy()
    for k in range(1, delay + 1):
        alive[:-k] = np.maximum(alive[:-k], need[k:])
    res = Result(policy="oracle", capacity=need * opts.capacity)
    res.pod_hours = float(alive[score_from:].sum() * opts.tick / 3600.0)
    res.demand_stream_minutes = float(demand[score_from:].sum()) * opts.tick / 60.0
    res.scale_events = int(np.count_nonzero(np.diff(alive[score_from:])))
    return res

