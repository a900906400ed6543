"""The availability objective's error budget, and the headroom it buys.

Availability is the share of demanded stream-minutes that find ready capacity; live, the
share of stream requests the gateways admit (a request refused as over capacity or
draining is unserved). The objective (`spec.scaling.availability`, by tier 99.99% /
99.9% / 99%) leaves an error budget: 1 - objective of the demand, over a rolling 30 days.
The burn rate over a window is the share unserved there divided by that budget share: at
1 the budget lasts exactly the 30 days, at 14.4 an hour spends 2% of it (the SRE
workbook's fast-burn page).

`HeadroomController` spends the budget as an SRE error-budget policy does, on the band's
width (in sigmas of the forecaster's own errors):
- it widens at once (a step, then a pod start's wait to see it act) only while the budget
  is threatened: while a burn-rate alert's condition holds (`BURN_ALERTS`, the page and
  the ticket of the chart's PrometheusRule), not on any minute that burned above 1;
- otherwise it aims the window's spend at `aim` of the budget: it narrows while both the
  window so far and the last hour spend under the aim, widens slowly while both spend
  over it, and holds while they disagree (a window overspent by misses that have stopped
  needs no wider band; one miss in an underspent window does not call for a narrower one).
So a pipeline spends about its budget and holds only as much headroom as its traffic has
shown it needs. The live scaler and the backtest run the same controller, fed once a tick
with the demand and what of it went unserved.

It learns only from a forecaster that can be judged (`SeasonalForecaster.judged`: a day
of history). Before that, a new pipeline's forecaster (or a restarted operator's, where
Prometheus holds less than a day of the pipeline) has not seen this time of day, so its
misses (the first opening of a call centre) say nothing of the band it will need, and a
band widened for them stayed wide for the budget's 30 days.
So the record keeps two views: `budget`, every miss, which status, metrics and alerts
report; and `acted`, the misses made while the forecaster was judged, which move the
band. Until then the band holds the tier's width.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

DAY = 86400.0
SLO_WINDOW = 30 * DAY
BUCKET = 60.0
# Windows of the multi-window burn-rate alerts (fast: 1h and 5m; slow: 6h and 30m).
BURN_WINDOWS = {"5m": 300.0, "30m": 1800.0, "1h": 3600.0, "6h": 6 * 3600.0}


@dataclass(frozen=True)
class BurnAlert:
    """A multi-window burn-rate alert: both windows burn above `rate`."""
    name: str
    rate: float
    long: str
    short: str


# The SRE workbook's alerts on a 30-day budget, and the chart's defaults
# (monitoring.prometheusRule.fastBurnRate / slowBurnRate; tests/chart checks they agree):
# a page at 2% of the budget in an hour, a ticket at 5% in six hours.
FAST_BURN = BurnAlert("fast", 14.4, "1h", "5m")
SLOW_BURN = BurnAlert("slow", 6.0, "6h", "30m")
BURN_ALERTS = (FAST_BURN, SLOW_BURN)


class ErrorBudget:
    """Demand and unserved demand per minute over a rolling window (any one unit: stream-
    seconds in the backtest, stream requests live); burn rates over any shorter window."""

    def __init__(self, objective: float, window: float = SLO_WINDOW):
        if not 0.0 < objective < 1.0:
            raise ValueError(f"objective must be in (0, 1), got {objective}")
        self.objective = objective
        self.window = window
        self._minutes: list[float] = []       # bucket start times
        self._demand: list[float] = [0.0]     # cumulative sums, one longer than the buckets
        self._unserved: list[float] = [0.0]

    def judged_by(self, objective: float) -> "ErrorBudget":
        """The same record against another objective."""
        if not 0.0 < objective < 1.0:
            raise ValueError(f"objective must be in (0, 1), got {objective}")
        self.objective = objective
        return self

    @property
    def budget(self) -> float:
        return 1.0 - self.objective

    def record(self, t: float, demanded: float, unserved: float) -> None:
        minute = math.floor(t / BUCKET) * BUCKET
        if not self._minutes or minute > self._minutes[-1]:
            self._minutes.append(minute)
            self._demand.append(self._demand[-1])
            self._unserved.append(self._unserved[-1])
            if len(self._minutes) > 2 * self.window / BUCKET + 2:
                self._forget(minute - self.window)
        self._demand[-1] += max(demanded, 0.0)
        self._unserved[-1] += min(max(unserved, 0.0), max(demanded, 0.0))

    def _forget(self, before: float) -> None:
        k = bisect.bisect_left(self._minutes, before)
        self._minutes = self._minutes[k:]
        self._demand = [d - self._demand[k] for d in self._demand[k:]]
        self._unserved = [u - self._unserved[k] for u in self._unserved[k:]]

    def totals(self, seconds: float, now: float | None = None) -> tuple[float, float]:
        """(demand, unserved) over the last `seconds` up to `now` (default: the last record)."""
        if not self._minutes:
            return 0.0, 0.0
        end = self._minutes[-1] + BUCKET if now is None else now
        k = bisect.bisect_right(self._minutes, end - seconds - 1e-9)
        return self._demand[-1] - self._demand[k], self._unserved[-1] - self._unserved[k]

    def availability(self, seconds: float | None = None) -> float | None:
        demand, unserved = self.totals(self.window if seconds is None else seconds)
        return None if demand <= 0 else 1.0 - unserved / demand

    def burn_rate(self, seconds: float) -> float | None:
        """The share unserved over the last `seconds`, in budgets; None with no demand."""
        demand, unserved = self.totals(seconds)
        return None if demand <= 0 else unserved / demand / self.budget

    def remaining(self) -> float | None:
        """The share of the window's budget not spent yet (negative: overspent)."""
        rate = self.burn_rate(self.window)
        return None if rate is None else 1.0 - rate

    def span(self) -> float:
        return 0.0 if not self._minutes else self._minutes[-1] + BUCKET - self._minutes[0]


@dataclass(frozen=True)
class HeadroomSettings:
    # Threatened (a burn-rate alert's condition holds): widen by this much, then let it
    # take effect (a lead time and a pod start) before widening again.
    widen_step: float = 0.5
    widen_cooldown: float = 300.0
    # Otherwise the spend is aimed at `aim` of the budget (the rest is the margin for a
    # window that rolls): narrow at `narrow_per_hour` sigmas an hour while the window and
    # the last hour both spend under it, widen at `widen_per_hour` while both spend over it.
    aim: float = 0.9
    narrow_per_hour: float = 1.0
    widen_per_hour: float = 0.25
    least: float = 0.0
    most: float = 4.0


class HeadroomController:
    """The band's width in sigmas, moved by the error budget (see the module's docstring)."""

    def __init__(self, objective: float, start_sigmas: float, settings: HeadroomSettings = HeadroomSettings(),
                 window: float = SLO_WINDOW):
        self.budget = ErrorBudget(objective, window)   # every miss: what is reported
        self.acted = ErrorBudget(objective, window)    # the misses of a judged forecaster: what moves the band
        self.settings = settings
        self.sigmas = min(max(start_sigmas, settings.least), settings.most)
        self.learning = False
        self._t: float | None = None
        self._widened: float | None = None

    def judged_by(self, objective: float) -> "HeadroomController":
        """The same record (both views) against another objective."""
        self.budget.judged_by(objective)
        self.acted.judged_by(objective)
        return self

    def record(self, t: float, demanded: float, unserved: float) -> None:
        """What the interval up to `t` demanded and left unserved: reported always, acted
        on when the forecaster was judged at the last `update`."""
        self.budget.record(t, demanded, unserved)
        if self.learning:
            self.acted.record(t, demanded, unserved)

    def update(self, now: float, judged: bool) -> float:
        """The band's width for the tick at `now`, from what was recorded before it.
        `judged`: the forecaster has history enough to be judged by its misses. While it
        is not (or there is no forecast: Prometheus down), the band holds its width: the
        tier's until the forecaster is first judged."""
        s, b = self.settings, self.acted
        hours = 0.0 if self._t is None else max(now - self._t, 0.0) / 3600.0
        self._t = now
        self.learning = judged
        if not judged:
            return self.sigmas
        if self.threatened():
            if self._widened is None or now - self._widened >= s.widen_cooldown:
                self.sigmas = min(self.sigmas + s.widen_step, s.most)
                self._widened = now
            return self.sigmas
        # No demand in a window spends nothing: under any aim.
        window, hour = b.burn_rate(b.window) or 0.0, b.burn_rate(BURN_WINDOWS["1h"]) or 0.0
        if window > s.aim and hour > s.aim:
            self.sigmas = min(self.sigmas + s.widen_per_hour * hours, s.most)
        elif window < s.aim and hour < s.aim:
            # The closer the spend to the aim, the slower: the band settles where it
            # spends the budget instead of overshooting into misses it takes days to see.
            self.sigmas = max(self.sigmas - s.narrow_per_hour * (1.0 - window / s.aim) * hours, s.least)
        return self.sigmas

    def threatened(self) -> bool:
        """A burn-rate alert's condition holds on the misses the band acts on."""
        return any(all((self.acted.burn_rate(BURN_WINDOWS[w]) or 0.0) > alert.rate for w in (alert.long, alert.short))
                   for alert in BURN_ALERTS)

    def burn_rates(self) -> dict[str, float | None]:
        """The reported burn rates (every miss), per alert window."""
        return {name: self.budget.burn_rate(seconds) for name, seconds in BURN_WINDOWS.items()}
