"""Demand forecasts one lead time ahead, with a band from the forecaster's own recent errors.

A forecaster is fed observations in time order (`observe`) and asked for the demand at
`now + horizon` (`predict`). The same object serves the live operator (fed the Prometheus
history once, then each new point) and the backtest (fed every 15 s tick), so both judge
the same code.

`SeasonalForecaster` blends four predictors and weights them by how well each did at the
lead time lately, so one tuning fits traces where the last value wins (steps, no cycle),
traces where the daily or weekly cycle wins, and traces where the last value is mostly
noise:

- level: the recent value (the last value beats seasonal-naive at minutes ahead);
- trend: level plus a damped short-term slope (ramps that started already);
- seasonal: level times the weekly (or, with less than a week of history, daily) profile's
  change between now and now + horizon, so the recent level corrects the profile (a change
  steeper than 2x, or from zero, is added rather than multiplied: `seasonal_change`);
- mean: the average of the last quarter hour or so. Where demand comes in bursts or small
  noisy counts, the level chases each burst and the band has to cover that chase; the
  mean does not.

A step the profile shows at this time of day or week (opening hours) is provisioned in
full: the band's top takes it one lead time ahead (`_scheduled`).

The band comes from the blend's errors at exactly the lead time (not one-step residuals,
which understate the error three minutes out). Errors are kept in units of the square root
of the demand, as count noise grows: a band relative to the level was too narrow where
demand is low and too wide where it is high within the same hour. The band is filtered
historical simulation, as value-at-risk is often computed: each error is divided by the
error scale of its moment (an RMS weighted to the last half hour), the tier's quantile is
read from a day of these standardised errors, and multiplied back by the scale now. The
band then narrows from the first minutes of a calm, where a quantile of the last hour's
errors held the noisy width for an hour, and the quantile, which sets how far into the
tail the band reaches, rests on a day's errors rather than the five of an hour's 240
that lie beyond it.

`coverage()` is the band's record over that day: the share of outcomes that came at or
below the band's top. The operator exports it beside the share the tier means, so a band
that no longer covers the traffic raises an alert rather than only unserved streams.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

DAY = 86400.0
WEEK = 7 * DAY
BIN = 60.0                        # seasonal profiles keep one value per minute
DAY_BINS = int(DAY // BIN)
WEEK_BINS = int(WEEK // BIN)


@dataclass(frozen=True)
class Forecast:
    at: float            # unix seconds the forecast is for (now + horizon)
    horizon: float       # seconds ahead
    expected: float      # streams
    upper: float         # expected + band
    lower: float
    model: str           # what produced it, e.g. "seasonal-weekly+trend"
    history: float       # seconds of history seen

    @property
    def band(self) -> float:
        return self.upper - self.expected


def band_quantile(sigmas: float) -> float:
    """The share of outcomes a band of `sigmas` (a tier's headroom) is meant to cover: the
    quantile that many sigmas stand for under a normal distribution (2: 97.7%)."""
    return 0.5 * (1.0 + math.erf(sigmas / math.sqrt(2.0)))


def seasonal_change(level: float, now: float, then: float) -> float:
    """The demand at now + horizon when the profile goes from `now` to `then` there and the
    recent level is `level`. Within a factor of two, as a ratio: the level scaled as the
    profile moves (the recent level corrects the profile's). A move steeper than that, or
    from zero (opening hours), as a change: the profile's own rise, in the level's
    proportion to it (within [0.5, 2]), is added, so a rise the history shows every day is
    forecast in full where a clamped ratio saw at most twice the level, and from zero
    nothing."""
    if now > 0 and 0.5 <= then / now <= 2.0:
        return level * then / now
    scale = min(max(level / now, 0.5), 2.0) if now > 0 else 1.0
    return max(level + scale * (then - now), 0.0)


def _alpha(dt: float, tau: float) -> float:
    """Exponential-smoothing weight for a step of `dt` seconds and time constant `tau`,
    so irregular steps (60 s live, 15 s in the backtest, gaps) weigh the same per second."""
    return 1.0 - math.exp(-max(dt, 0.0) / tau)


class SeasonalProfile:
    """Mean demand per minute of the day and of the week, smoothed across days."""

    def __init__(self, weight: float = 0.3):
        self.weight = weight
        # Plain lists: every access is one element, where numpy's per-call overhead
        # dominated (14 days of 1-minute history took 2.5 s to feed).
        self.day = [0.0] * DAY_BINS
        self.day_n = [0] * DAY_BINS
        self.week = [0.0] * WEEK_BINS
        self.week_n = [0] * WEEK_BINS
        self._minute: int | None = None
        self._sum = 0.0
        self._count = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        # value() per (minute, width, table): the tables change only once a minute, and the
        # forecaster asks for the same minutes on every tick.
        self._cache: dict[tuple[int, int, bool, bool], tuple[float, str] | None] = {}

    def add(self, t: float, value: float) -> None:
        minute = int(t // BIN)
        if self._minute is not None and minute != self._minute:
            self._commit()
        self._minute = minute
        self._sum += value
        self._count += 1
        self.first_t = t if self.first_t is None else self.first_t
        self.last_t = t

    def _commit(self) -> None:
        if not self._count:
            return
        mean = self._sum / self._count
        for table, counts, index in ((self.day, self.day_n, self._minute % DAY_BINS),
                                     (self.week, self.week_n, self._minute % WEEK_BINS)):
            w = 1.0 if counts[index] == 0 else self.weight
            table[index] += w * (mean - table[index])
            counts[index] += 1
        self._sum, self._count = 0.0, 0
        self._cache.clear()

    def span(self) -> float:
        return 0.0 if self.first_t is None else self.last_t - self.first_t

    def value(self, t: float, width: int = 3) -> tuple[float, str] | None:
        """Profile value around `t` (mean over +-width minutes), from the weekly table when
        a week of history covers it, else the daily one; None without a day of history."""
        minute = int(t // BIN)
        span = self.span()
        key = (minute, width, span >= WEEK, span >= DAY)
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = self._value(minute, width, span)
        return self._cache[key]

    def _value(self, minute: int, width: int, span: float) -> tuple[float, str] | None:
        for table, counts, bins, name, needed in ((self.week, self.week_n, WEEK_BINS, "weekly", WEEK),
                                                  (self.day, self.day_n, DAY_BINS, "daily", DAY)):
            if span < needed:
                continue
            seen = [table[m % bins] for m in range(minute - width, minute + width + 1) if counts[m % bins]]
            if len(seen) >= width + 1:
                return math.fsum(seen) / len(seen), name
        return None


class SeasonalForecaster:
    """Level + trend + seasonal blend with a band from errors at the lead time."""

    def __init__(self, lead: float = 180.0, band_sigmas: float = 2.0, *,
                 trend_tau: float = 15.0, level_tau: float = 1.0, trend_damping: float = 1.0, error_tau: float = 900.0,
                 weight_tau: float = 6 * 3600.0, max_gap: float = 900.0, band: str = "filtered",
                 scale_tau: float = 1800.0, shape_window: float = DAY, upper_takes_trend: bool = True,
                 weight_power: float = 1.0, trend_gate: float = 0.3, mean_tau: float = 900.0):
        self.lead = lead
        self.band_sigmas = band_sigmas
        self.trend_tau = trend_tau
        self.trend_damping = trend_damping
        self.level_tau = level_tau
        self.mean_tau = mean_tau
        self.error_tau = error_tau
        self.weight_tau = weight_tau
        self.max_gap = max_gap
        self.band = band
        self.upper_takes_trend = upper_takes_trend
        self.weight_power = weight_power
        self.trend_gate = trend_gate
        self.scale_tau = scale_tau
        self.shape_window = shape_window
        # The blend's signed errors at the lead time, (actual - forecast) / sqrt(demand), have
        # a mean square `_scale2 / _scale_weight` over the last `scale_tau`; `_standardised`
        # holds, for the last `shape_window`, when each was scored and the error divided by
        # that RMS as it was when the forecast was made; `_standardised_sorted` the same
        # values in order, kept sorted as they come and go, so the band's quantile, asked
        # for on every observation, is a lookup rather than a sort.
        self._scale2 = 0.0
        self._scale_weight = 0.0
        self._scored_target: float | None = None
        self._standardised: deque[tuple[float, float]] = deque()
        self._standardised_sorted: list[float] = []
        self.quantile = band_quantile(band_sigmas)
        self.profile = SeasonalProfile()
        self.t: float | None = None
        self.level = 0.0
        self.slope = 0.0              # streams per second
        self.mean = 0.0
        self.observations = 0
        # Predictions waiting for their target time: (target_t, (level, trend, seasonal, mean),
        # blend, the error scale when it was made or None before there was one, the band's top).
        self._pending: deque[tuple[float, tuple[float, ...], float, float | None, float]] = deque()
        # The last `shape_window` of scored predictions, (when, outcome at or below the band's
        # top), and how many were: the band's live calibration (`coverage`).
        self._covered: deque[tuple[float, bool]] = deque()
        self._covered_count = 0
        # The forecast at the lead time `_remember` made for the last observation: what
        # `predict(self.t)` returns, so the tick that observes and then predicts blends once.
        self._latest: Forecast | None = None
        self._mse = [1e-4] * 4            # relative squared error per predictor at the lead
        self._err_up = 0.0               # mean squared under-forecast of the blend, relative
        self._err_weight = 0.0
        self._seasonal_name = ""

    # -- feeding ------------------------------------------------------------------
    def observe(self, t: float, value: float) -> None:
        """One observation of demand (streams). NaN or None is a gap: nothing is learned."""
        if value is None or not math.isfinite(value):
            return
        value = max(float(value), 0.0)
        if self.t is not None and t <= self.t:
            return   # out of order or duplicate: the first value wins
        self._score(t, value)
        if self.t is None or t - self.t > self.max_gap:
            # First point or after a long gap: the old level, slope and mean say nothing now.
            self.level, self.slope, self.mean = value, 0.0, value
        else:
            dt = t - self.t
            prev = self.level
            self.level += _alpha(dt, self.level_tau) * (value - self.level)
            self.slope += _alpha(dt, self.trend_tau) * ((self.level - prev) / dt - self.slope)
            self.mean += _alpha(dt, self.mean_tau) * (value - self.mean)
        self.t = t
        self.observations += 1
        self.profile.add(t, value)
        self._remember(t)

    def observe_many(self, times, values) -> None:
        for t, v in zip(np.asarray(times, dtype=float), np.asarray(values, dtype=float)):
            self.observe(float(t), float(v))

    # -- predicting ------------------------------------------------------------------
    def _candidates(self, t: float, horizon: float) -> tuple[float, float, float, float]:
        level = self.level
        # Damped trend: a ramp seen over the last minute or two rarely lasts the full lead.
        trend = max(level + self.trend_damping * self.slope * horizon, 0.0)
        seasonal = level
        self._seasonal_name = ""
        now_s = self.profile.value(t)
        if now_s is not None:
            then_s = self.profile.value(t + horizon)
            if then_s is not None:
                seasonal = seasonal_change(level, now_s[0], then_s[0])
                self._seasonal_name = now_s[1]
        return level, trend, seasonal, self.mean

    def _scheduled(self, t: float, horizon: float) -> float | None:
        """The demand at t + horizon when the profile shows a step there, beyond count
        noise (3 sqrt of the demand it steps to), minute by minute without smoothing (a
        smoothed profile starts a step early and halves it); None without one."""
        now = self.profile.value(t, width=0)
        if now is None:
            return None
        then = [v[0] for v in (self.profile.value(t + horizon, width=0),
                                self.profile.value(t + horizon + BIN, width=0)) if v is not None]
        peak = max(then, default=0.0)
        if peak - now[0] <= 3.0 * math.sqrt(max(peak, 1.0)):
            return None
        return seasonal_change(self.level, now[0], peak)

    def _weights(self) -> list[float]:
        inv = [(1.0 / (m + 1e-6)) ** self.weight_power for m in self._mse]
        total = sum(inv)
        return [w / total for w in inv]

    def _blend(self, cands: tuple[float, ...]) -> float:
        return sum(w * c for w, c in zip(self._weights(), cands))

    def _remember(self, t: float) -> None:
        cands, forecast = self._forecast(t, self.lead)
        self._latest = forecast
        # Its error is standardised by the scale the band had when it was made, not by the
        # scale at scoring time, which already holds the errors of the predictions that
        # overlap it: the band is judged by what it knew. None until the scale rests on
        # some minutes of errors (half its weight).
        scale = self._error_scale() if self._scale_weight >= 0.5 else None
        self._pending.append((t + self.lead, cands, forecast.expected, scale, forecast.upper))

    def _score(self, t: float, value: float) -> None:
        """Errors at the lead time for every prediction whose target time has come."""
        while self._pending and self._pending[0][0] <= t:
            target, cands, blend, error_scale, upper = self._pending.popleft()
            if t - target > self.max_gap:
                continue   # the target fell into a gap: no truth to compare with
            scale = max(value, blend, 1.0)
            # Each error weighs the time since the forecast before it, so the time constants
            # hold on the operator's 1-minute Prometheus points as on the backtest's 15 s ticks.
            spacing = self.lead / 12 if self._scored_target is None else target - self._scored_target
            spacing = min(spacing, self.max_gap)
            self._scored_target = target
            a = _alpha(spacing, self.weight_tau)
            for i, c in enumerate(cands):
                self._mse[i] += a * (((value - c) / scale) ** 2 - self._mse[i])
            under = max(value - blend, 0.0) / scale
            error = (value - blend) / math.sqrt(scale)
            if error_scale is not None:
                z = error / error_scale
                self._standardised.append((t, z))
                bisect.insort(self._standardised_sorted, z)
            self._covered.append((t, value <= upper))
            self._covered_count += value <= upper
            c = _alpha(spacing, self.scale_tau)
            self._scale2 += c * (error * error - self._scale2)
            self._scale_weight += c * (1.0 - self._scale_weight)
            b = _alpha(spacing, self.error_tau)
            self._err_up += b * (under * under - self._err_up)
            self._err_weight += b * (1.0 - self._err_weight)
        self._forget_before(t - self.shape_window)

    def _forget_before(self, t: float) -> None:
        """Drop the scored errors and outcomes older than `t`."""
        while self._standardised and self._standardised[0][0] < t:
            z = self._standardised.popleft()[1]
            del self._standardised_sorted[bisect.bisect_left(self._standardised_sorted, z)]
        while self._covered and self._covered[0][0] < t:
            self._covered_count -= self._covered.popleft()[1]

    @property
    def judged(self) -> bool:
        """A day of history: from then on every predictor is in use (the daily profile
        knows each time of day) and the band's quantile rests on a day of its own errors,
        so a miss says how wide the band must be. Before it, a miss says only that the
        forecaster is new (the error budget's controller does not learn from it)."""
        return self.profile.span() >= max(DAY, self.shape_window)

    def coverage(self) -> tuple[float, int] | None:
        """The band's live calibration: of the predictions scored over the last
        `shape_window`, the share whose outcome came at or below their band's top, and how
        many were scored. The tier's sigmas name the share it should be (`quantile`). None
        until the scored outcomes span an hour: a few minutes' share says nothing of a tail."""
        if not self._covered or self._covered[-1][0] - self._covered[0][0] < 3600.0:
            return None
        return self._covered_count / len(self._covered), len(self._covered)

    def set_lead(self, lead: float) -> None:
        """A new lead time (the measured pod start moved): forecasts from now on look this
        far ahead; the history, profile and errors stay."""
        if lead != self.lead:
            self.lead = lead
            self._latest = None

    def set_band(self, sigmas: float) -> None:
        """A new band width (the error budget moves it); the forecast made for the last
        observation is made again with it."""
        if sigmas != self.band_sigmas:
            self.band_sigmas = sigmas
            self.quantile = band_quantile(sigmas)
            self._latest = None

    def band_streams(self, expected: float) -> float:
        """How far above `expected` the band reaches, in streams.

        `filtered`: the tier's quantile (a normal error at `headroom_sigmas` sigma) of the
        last `shape_window` of standardised errors at the lead time, times the error scale
        now, times sqrt(expected): bias and skew count, and the band widens and narrows with
        the error scale (time constant `scale_tau` on its square). `rms`, and until 20
        standardised errors are known: headroom_sigmas x one-sided RMS, relative to expected."""
        level = max(expected, 1.0)
        if self.band == "filtered" and len(self._standardised_sorted) >= 20:
            z = max(_sorted_quantile(self._standardised_sorted, self.quantile), 0.0)
            return z * self._error_scale() * math.sqrt(level)
        return self.band_sigmas * self.sigma() * level

    def _error_scale(self) -> float:
        """RMS of the recent errors at the lead time, in sqrt(demand) units. Its floor, a
        tenth of Poisson count noise, keeps a series that was exactly flat from turning its
        first small error into a huge standardised one."""
        return math.sqrt(self._scale2 / max(self._scale_weight, 1e-9) + 0.01)

    def sigma(self) -> float:
        """Relative under-forecast scale at the lead time (one-sided RMS x sqrt 2)."""
        if self._err_weight < 1e-9:
            return 0.25   # nothing scored yet: a wide band until the forecaster has a record
        return math.sqrt(2.0 * self._err_up / self._err_weight)

    def predict(self, now: float, horizon: float | None = None) -> Forecast:
        if self.t is None:
            raise ValueError("no observations yet: cannot forecast")
        horizon = self.lead if horizon is None else horizon
        if now == self.t and horizon == self.lead and self._latest is not None:
            return self._latest
        return self._forecast(now, horizon)[1]

    def _forecast(self, now: float, horizon: float) -> tuple[tuple[float, ...], Forecast]:
        """The predictors' values and the forecast they blend into."""
        cands = self._candidates(now, horizon)
        expected = max(self._blend(cands), 0.0)
        scale = math.sqrt(max(horizon, 1.0) / self.lead)
        spread = self.band_streams(expected) * scale
        # A ramp that has started is the one error the blend makes every time (it weighs
        # the trend by its noisy record): the upper bound follows the trend when it is higher.
        # Only where the trend has earned a share of the predictors that follow the level:
        # on noisy series (small counts) it mostly extrapolates noise. The mean's weight does
        # not count against it: a series can be noisy on average and still spike (worldcup's
        # matches), and the mean, which lags by design, is then what the upper must not follow.
        w = self._weights()
        trusted = self.upper_takes_trend and w[1] >= self.trend_gate * (1.0 - w[3])
        top = max(expected, cands[1]) if trusted else expected
        # A step the history shows at this time of day or week (opening hours, a nightly
        # batch) is provisioned in full: the blend weighs the seasonal predictor by its
        # record over the whole day, where a schedule is right mostly at its steps.
        scheduled = self._scheduled(now, horizon)
        if scheduled is not None:
            top = max(top, scheduled)
        labels = ("level", "trend", f"seasonal-{self._seasonal_name}" if self._seasonal_name else "", "mean")
        parts = [label for label, weight in zip(labels, w) if label and weight >= 0.25]
        return cands, Forecast(at=now + horizon, horizon=horizon, expected=expected, upper=top + spread,
                               lower=max(expected - spread, 0.0), model="+".join(parts) or "level",
                               history=self.profile.span())


class HoltWintersForecaster:
    """The Predictive-HPA-style baseline: additive Holt-Winters with a daily season on
    one-minute means, and a fixed 2-sigma band from its one-step residuals.

    It follows the trace's clock, as PHPA's seasonal index does: the season is indexed by
    the minute of the day, and across a gap (minutes with no observation) the level moves
    by the trend once per minute of the gap, not once per observation, so a trace with
    nightly gaps does not compress days into each other; after a gap longer than the
    season's smoothing can bridge (`max_gap`) the trend starts again from zero."""

    def __init__(self, lead: float = 180.0, band_sigmas: float = 2.0, *,
                 alpha: float = 0.9, beta: float = 0.9, gamma: float = 0.9, max_gap: float = 3600.0):
        self.lead = lead
        self.band_sigmas = band_sigmas
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.max_gap_minutes = max_gap / BIN
        self.season = np.zeros(DAY_BINS)
        self.season_n = np.zeros(DAY_BINS, dtype=np.int32)
        self.level: float | None = None
        self.trend = 0.0                  # per minute
        self.t: float | None = None
        self._minute: int | None = None   # the minute being averaged
        self._updated: int | None = None  # the last minute the state was updated for
        self._sum = 0.0
        self._count = 0
        self._resid2 = 0.0
        self._resid_n = 0
        self.last_value = 0.0

    def observe(self, t: float, value: float) -> None:
        if value is None or not math.isfinite(value):
            return
        minute = int(t // BIN)
        if self._minute is not None and minute != self._minute and self._count:
            self._update(self._minute, self._sum / self._count)
            self._sum, self._count = 0.0, 0
        self._minute = minute
        self._sum += value
        self._count += 1
        self.t = t
        self.last_value = value

    def _update(self, minute: int, y: float) -> None:
        b = minute % DAY_BINS
        s = self.season[b] if self.season_n[b] else 0.0
        steps = 1 if self._updated is None else max(minute - self._updated, 1)
        self._updated = minute
        if self.level is None or steps > self.max_gap_minutes:
            self.level, self.trend = y - s, 0.0
            return
        predicted = self.level + steps * self.trend + s
        if steps == 1:
            self._resid2 += (y - predicted) ** 2
            self._resid_n += 1
        prev = self.level
        self.level = self.alpha * (y - s) + (1 - self.alpha) * (self.level + steps * self.trend)
        self.trend = self.beta * (self.level - prev) / steps + (1 - self.beta) * self.trend
        self.season[b] = self.gamma * (y - self.level) + (1 - self.gamma) * s if self.season_n[b] else y - self.level
        self.season_n[b] += 1

    def predict(self, now: float, horizon: float | None = None) -> Forecast:
        horizon = self.lead if horizon is None else horizon
        target = int((now + horizon) // BIN)
        if self.level is None or self._updated is None:
            level, trend, steps = self.last_value, 0.0, 0.0
        else:
            level, trend = self.level, self.trend
            steps = float(target - self._updated)      # minutes on the trace's clock
            if steps > self.max_gap_minutes:
                trend = 0.0
        b = target % DAY_BINS
        expected = max(level + steps * trend + (self.season[b] if self.season_n[b] else 0.0), 0.0)
        sd = math.sqrt(self._resid2 / self._resid_n) if self._resid_n else 0.25 * max(expected, 1.0)
        spread = self.band_sigmas * sd * math.sqrt(max(horizon / BIN, 1.0))
        return Forecast(at=now + horizon, horizon=horizon, expected=expected, upper=expected + spread,
                        lower=max(expected - spread, 0.0), model="holt-winters", history=0.0)


def _sorted_quantile(values: list[float], q: float) -> float:
    """np.quantile's default (linear) estimate on values already sorted."""
    at = q * (len(values) - 1)
    lo = int(math.floor(at))
    hi = min(lo + 1, len(values) - 1)
    a, b, g = values[lo], values[hi], at - lo
    # numpy's own interpolation, including its rounding: b - (b - a)(1 - g) past the middle.
    return b - (b - a) * (1.0 - g) if g >= 0.5 else a + (b - a) * g


def from_counter(values) -> np.ndarray:
    """Per-step increases of a counter series, treating any drop as a reset (the counter
    restarted from zero, so the increase is the new value itself). NaN gaps stay NaN."""
    v = np.asarray(values, dtype=float)
    out = np.full_like(v, np.nan)
    prev = np.nan
    for i, x in enumerate(v):
        if not math.isfinite(x):
            continue
        if math.isfinite(prev):
            out[i] = x - prev if x >= prev else x
        prev = x
    return out


def clean_history(times, values) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, de-duplicated, finite, non-negative points: what Prometheus returned, minus
    what no forecaster can use. Raises ValueError on shapes that are not a series."""
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"times and values must be 1-d and the same length, got {t.shape} and {v.shape}")
    keep = np.isfinite(t) & np.isfinite(v) & (v >= 0)
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if len(t):
        first = np.concatenate(([True], np.diff(t) > 0))
        t, v = t[first], v[first]
    return t, v
