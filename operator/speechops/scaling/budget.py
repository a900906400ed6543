"""The availability objective's error budget, and the headroom it buys.

Availability is the share of demanded stream-minutes that find ready capacity; live, the
share of stream requests the gateways admit (a request refused as over capacity or
draining is unserved). The objective (`spec.scaling.availability`, by tier 99.99% /
99.9% / 99%) leaves an error budget: 1 - objective of the demand, over a rolling 30 days.
The burn rate over a window is the share unserved there divided by that budget share: at
1 the budget lasts exactly the 30 days, at 14.4 an hour spends 2% of it (the SRE
workbook's fast-burn page).

`HeadroomController` spends the budget: the forecast band's width (in sigmas of the
forecaster's own errors) widens at once while the budget burns fast (both the hour and
the last five minutes above 1), widens slowly while the window is overspent, and narrows
while less than half of what the window allows so far is spent and the last hour was
clean, so a pipeline holds only as much headroom as its traffic has shown it needs. The
live scaler and the backtest run the same controller, fed once a tick with the demand and
what of it went unserved.

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
    # Fast burn (the hour and the last five minutes both above 1): widen by this much, then
    # let it take effect (a lead time and a pod start) before widening again.
    widen_step: float = 0.5
    widen_cooldown: float = 300.0
    # Spent under `spend` of what the window allows so far, and nothing unserved for an
    # hour: narrow at this many sigmas an hour. Overspent (the window's burn above 1):
    # widen at `recover_per_hour`.
    spend: float = 0.5
    narrow_per_hour: float = 1.0
    recover_per_hour: float = 0.25
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
        hour, five = b.burn_rate(BURN_WINDOWS["1h"]), b.burn_rate(BURN_WINDOWS["5m"])
        window = b.burn_rate(b.window)
        if hour is not None and five is not None and hour > 1.0 and five > 1.0:
            if self._widened is None or now - self._widened >= s.widen_cooldown:
                self.sigmas = min(self.sigmas + s.widen_step, s.most)
                self._widened = now
        elif window is not None and window > 1.0:
            self.sigmas = min(self.sigmas + s.recover_per_hour * hours, s.most)
        elif (window is None or window < s.spend) and not (hour or 0.0) > 0.0:
            self.sigmas = max(self.sigmas - s.narrow_per_hour * hours, s.least)
        return self.sigmas

    def burn_rates(self) -> dict[str, float | None]:
        """The reported burn rates (every miss), per alert window."""
        return {name: self.budget.burn_rate(seconds) for name, seconds in BURN_WINDOWS.items()}
