"""Forecaster behaviour on synthetic series (the shared traces are for the backtest)."""

import math

import numpy as np
import pytest

from speechops.scaling.forecast import (DAY, HoltWintersForecaster, SeasonalForecaster, _sorted_quantile, clean_history,
                                        from_counter)

T0 = 1_700_006_400.0   # a Monday 00:00 UTC


def daily(t):
    """A daily cycle between 100 and 500 streams, peak at 12:00."""
    return 300 - 200 * np.cos(2 * np.pi * ((t - T0) % DAY) / DAY)


def fed(times, values, **kw):
    f = SeasonalForecaster(lead=180.0, **kw)
    f.observe_many(times, values)
    return f


def test_empty_history_cannot_forecast():
    with pytest.raises(ValueError, match="no observations"):
        SeasonalForecaster().predict(T0)


def test_single_point_forecasts_that_level_with_a_wide_band():
    f = fed([T0], [40.0])
    fc = f.predict(T0)
    assert fc.expected == pytest.approx(40.0)
    assert fc.upper > 45.0          # nothing scored yet: the band is wide, not zero
    assert fc.history == 0.0


@pytest.mark.parametrize("value", [float("nan"), None, float("inf")], ids=["nan", "none", "inf"])
def test_gap_values_are_ignored(value):
    f = fed([T0, T0 + 60], [50.0, 50.0])
    f.observe(T0 + 120, value)
    assert f.observations == 2
    assert f.predict(T0 + 120).expected == pytest.approx(50.0, rel=0.01)


def test_long_gap_resets_level_and_trend():
    t = T0 + np.arange(0, 1800, 60.0)
    f = fed(t, np.linspace(0, 300, len(t)))        # a steep ramp
    f.observe(T0 + 1800 + 6 * 3600, 20.0)          # six hours later, a quiet level
    fc = f.predict(T0 + 1800 + 6 * 3600)
    assert fc.expected == pytest.approx(20.0, abs=1.0)


def test_ramp_is_extrapolated_by_the_trend():
    t = T0 + np.arange(0, 3600, 15.0)
    level = np.where(t < T0 + 3000, 100.0, 100.0 + (t - (T0 + 3000)) * 0.5)   # +0.5 streams/s
    f = fed(t, level)
    fc = f.predict(t[-1])
    assert fc.upper > level[-1] + 0.5 * 90        # sees at least half the next 180 s of ramp


def test_weekly_history_learns_the_daily_cycle_ahead_of_a_ramp():
    t = T0 + np.arange(0, 8 * DAY, 60.0)
    rng = np.random.default_rng(1)
    y = daily(t) * (1 + 0.02 * rng.standard_normal(len(t)))
    f = fed(t, y)
    # Morning ramp: the profile knows demand 3 minutes on is higher than now.
    now = T0 + 8 * DAY + 6 * 3600
    f.observe(now, float(daily(np.array([now]))[0]))
    fc = f.predict(now)
    assert fc.expected == pytest.approx(daily(np.array([now + 180]))[0], rel=0.03)
    assert fc.history >= 7 * DAY - 60
    assert fc.upper < fc.expected * 1.2           # steady noise: a narrow band


def test_spike_widens_the_band_then_it_narrows_again():
    t = T0 + np.arange(0, 6 * 3600, 15.0)
    y = np.full(len(t), 200.0)
    spike = (t > T0 + 3 * 3600) & (t < T0 + 3 * 3600 + 600)
    y[spike] = 600.0
    f = SeasonalForecaster(lead=180.0)
    bands = {}
    for ti, yi in zip(t, y):
        f.observe(ti, yi)
        if ti in (T0 + 3 * 3600 - 15, T0 + 3 * 3600 + 900, T0 + 6 * 3600 - 15):
            bands[ti] = f.predict(ti).band
    before, after, later = (bands[k] for k in sorted(bands))
    assert after > 5 * max(before, 1.0)
    assert later < after / 2


def test_counter_resets_become_increases():
    counter = [10, 15, 25, float("nan"), 40, 3, 8]
    inc = from_counter(counter)
    assert np.isnan(inc[0]) and np.isnan(inc[3])
    assert list(inc[[1, 2, 4, 5, 6]]) == [5, 10, 15, 3, 5]


def test_clean_history_sorts_dedups_and_drops_garbage():
    t, v = clean_history([3, 1, 2, 2, 4, 5], [30, 10, 20, 21, float("nan"), -1])
    assert list(t) == [1, 2, 3] and list(v) == [10, 20, 30]
    with pytest.raises(ValueError):
        clean_history([1, 2], [1])


def test_holt_winters_baseline_forecasts_a_level():
    t = T0 + np.arange(0, 3 * 3600, 15.0)
    f = HoltWintersForecaster(lead=180.0)
    f.observe_many = None
    for ti in t:
        f.observe(ti, 120.0)
    fc = f.predict(t[-1])
    assert fc.expected == pytest.approx(120.0, rel=0.02)
    assert fc.upper >= fc.expected and math.isfinite(fc.upper)


def test_noisy_counts_are_forecast_by_their_recent_mean_not_the_last_value():
    # 50 to 150 streams at random every 15 s for three hours: the last value says nothing
    # about the next one, the recent mean does.
    rng = np.random.default_rng(7)
    t = T0 + np.arange(0, 3 * 3600, 15.0)
    values = rng.uniform(50.0, 150.0, size=len(t))
    f = fed(t, values)
    weights = f._weights()
    assert weights[3] == max(weights)   # level and seasonal are one predictor without a day of history
    fc = f.predict(float(t[-1]))
    assert "mean" in fc.model and 85 < fc.expected < 115
    # The same series with the mean left out (it then equals the last value): a wider band.
    chasing = fed(t, values, mean_tau=1.0).predict(float(t[-1]))
    assert fc.upper - fc.expected < chasing.upper - chasing.expected



def test_the_band_covers_count_noise_as_well_at_low_demand_as_at_high():
    # Poisson counts whose level swings from 40 to 640 streams and back every hour: the
    # last hour's errors mix both levels. A band relative to the level covered 86% of
    # the outcomes three minutes out at the bottom of the swing and 100% at the top (too
    # wide there by 2.5x); in units of sqrt(demand) it covers about 97.7% at both.
    rng = np.random.default_rng(11)
    t = T0 + np.arange(0, 8 * 3600, 15.0)
    level = 340 - 300 * np.cos(2 * np.pi * (t - T0) / 3600)
    values = rng.poisson(level).astype(float)
    f = SeasonalForecaster(lead=180)
    upper_at = {}
    for ti, v in zip(t, values):
        f.observe(float(ti), float(v))
        upper_at[float(ti) + 180] = f.predict(float(ti)).upper
    scored = [(v <= upper_at[float(ti)], lv) for ti, v, lv in zip(t, values, level) if ti >= T0 + 2 * 3600]
    low = np.mean([covered for covered, lv in scored if lv < 100])
    high = np.mean([covered for covered, lv in scored if lv > 550])
    assert 0.93 <= low <= 0.995 and 0.93 <= high <= 0.995, (low, high)


def noisy_then_calm(seed: int, calm_hours: int):
    """15 s ticks of 200 streams: noisy (sd 30) for four hours, then calm (sd 5)."""
    rng = np.random.default_rng(seed)
    calm_from = T0 + 4 * 3600
    t = T0 + np.arange(0, (4 + calm_hours) * 3600, 15.0)
    return t, 200 + rng.normal(0, 1, len(t)) * np.where(t < calm_from, 30.0, 5.0), calm_from


def test_after_a_noisy_spell_the_band_narrows_from_the_first_minutes_of_calm():
    # 200 streams, noisy (sd 30) for four hours, then calm (sd 5) for four. The band is the
    # tail quantile of a day of errors, each divided by the error scale of its moment,
    # times the scale now, so it narrows as the scale does. A quantile of the last hour's
    # raw errors held the noisy width until the noisy errors had all left the hour.
    t, values, calm_from = noisy_then_calm(seed=3, calm_hours=4)
    f = SeasonalForecaster(lead=180)
    upper_at, band_at = {}, {}
    for ti, v in zip(t, values):
        f.observe(float(ti), float(v))
        fc = f.predict(float(ti))
        upper_at[float(ti) + 180], band_at[float(ti)] = fc.upper, fc.band
    noisy = band_at[calm_from - 15]
    assert band_at[calm_from + 40 * 60] < 0.6 * noisy
    assert band_at[t[-1]] < 0.25 * noisy
    for lo, hi in ((T0 + 2 * 3600, calm_from), (calm_from + 3600, t[-1])):
        covered = np.mean([v <= upper_at[float(ti)] for ti, v in zip(t, values) if lo <= ti <= hi])
        assert 0.93 <= covered <= 0.995, (lo, covered)


def test_the_band_follows_a_calm_as_fast_on_minute_points_as_on_15s_ticks():
    # The operator feeds the forecaster Prometheus' 1-minute points; the backtest, 15 s
    # ticks. The error scale is weighted by time, not by count, so 40 minutes into a calm
    # the band has narrowed as far on either.
    t, values, calm_from = noisy_then_calm(seed=4, calm_hours=2)
    narrowed = []
    for every in (1, 4):
        f = SeasonalForecaster(lead=180)
        bands = {}
        for ti, v in zip(t[::every], values[::every]):
            f.observe(float(ti), float(v))
            bands[float(ti)] = f.predict(float(ti)).band
        narrowed.append(bands[calm_from + 40 * 60] / bands[calm_from - 60])
    assert narrowed[0] < 0.6 and narrowed[1] == pytest.approx(narrowed[0], abs=0.15), narrowed


@pytest.mark.parametrize("n", [20, 21, 240, 241])
@pytest.mark.parametrize("q", [0.0, 0.5, 0.8413, 0.9772, 1.0])
def test_band_quantile_is_numpys_linear_quantile(n, q):
    errors = np.random.default_rng(n).standard_t(3, size=n)
    assert _sorted_quantile(sorted(errors.tolist()), q) == float(np.quantile(errors, q))


def daily_poisson(seed: int, hours: int):
    """15 s ticks of Poisson counts on a daily cycle between 100 and 500 streams."""
    t = T0 + np.arange(0, hours * 3600, 15.0)
    return t, np.random.default_rng(seed).poisson(300 - 200 * np.cos(2 * np.pi * (t - T0) / DAY)).astype(float)


def test_coverage_is_the_share_of_the_last_days_outcomes_under_their_band_top():
    # What the operator exports as the band's live calibration is what an observer outside
    # counts: each forecast's band top against the demand one lead time later, over a day.
    t, values = daily_poisson(seed=5, hours=30)
    f = SeasonalForecaster(lead=180)
    upper_at = {}
    for ti, v in zip(t, values):
        f.observe(float(ti), float(v))
        upper_at[float(ti) + 180] = f.predict(float(ti)).upper
        if ti == T0 + 45 * 60:
            assert f.coverage() is None     # 42 minutes scored: too few to judge a tail
    outcomes = [v <= upper_at[float(ti)] for ti, v in zip(t, values)
                if float(ti) in upper_at and ti >= t[-1] - DAY]
    share, scored = f.coverage()
    assert scored == len(outcomes) == DAY / 15 + 1
    assert share == pytest.approx(np.mean(outcomes))
    assert 0.96 <= share <= 0.99      # the 2 sigma tier means 97.7%


def test_coverage_falls_when_demand_turns_burstier_than_the_days_errors():
    # Four hours of bursts (150 more streams for 4 minutes in every 20) after a day of
    # plain count noise: the band, whose tail rests on the day's errors, misses their
    # starts, and the day's coverage drops below what the tier means.
    t, values = daily_poisson(seed=5, hours=30)
    bursts = (t >= T0 + 26 * 3600) & ((t - T0) % 1200 < 240)
    calm, bursty = fed(t, values), fed(t, values + 150 * bursts)
    assert bursty.coverage()[0] < min(calm.coverage()[0] - 0.01, bursty.quantile - 0.015)


def test_profile_lookups_follow_each_new_minute():
    # The profile caches lookups per minute; a committed minute must show in the next one.
    f = fed(T0 + np.arange(0, 2 * DAY, 60.0), np.full(2 * 1440, 100.0))
    before = f.profile.value(T0 + 2 * DAY)
    f.observe_many(T0 + 2 * DAY + np.arange(0, 600, 60.0), np.full(10, 400.0))
    f.observe(T0 + 2 * DAY + 600, 400.0)    # commits the tenth minute
    assert before[0] == pytest.approx(100.0)
    assert f.profile.value(T0 + 2 * DAY)[0] > before[0]


def _opening_hours(t: float, rng) -> float:
    """A call centre: nothing at night or at weekends; weekdays from 08:00, 0 -> 65 streams
    within two minutes (Poisson)."""
    day, second = int(t // DAY), t % DAY
    if (day + 3) % 7 >= 5 or not 8 * 3600 <= second < 18 * 3600:
        return 0.0
    return float(rng.poisson(65 * min((second - 8 * 3600) / 120.0, 1.0)))


def test_a_daily_opening_from_zero_is_provisioned_one_lead_time_ahead():
    rng = np.random.default_rng(1)
    f = SeasonalForecaster(lead=180.0, band_sigmas=2.0)
    monday = 4 * DAY                                   # 1970-01-05
    uppers = {}
    for t in np.arange(monday, monday + 14 * DAY, 15.0):
        f.observe(float(t), _opening_hours(float(t), rng))
        if t % DAY == 8 * 3600 - 60:                    # 07:59, for 08:02
            uppers[int((t - monday) // DAY)] = f.predict(float(t)).upper
    # The first Monday has no history; from the second weekday on the history shows the
    # opening (the daily profile, then the weekly one), and its top covers the 65 streams
    # the next two minutes bring, while demand is still zero.
    assert uppers[0] < 5
    assert all(uppers[d] >= 60 for d in (1, 2, 3, 4, 7, 8, 9, 10, 11)), uppers
    # The second weekend, once a week of history tells weekdays from weekends: no opening.
    assert uppers[12] < 5 and uppers[13] < 5


def test_the_seasonal_predictor_adds_a_rise_steeper_than_a_ratio():
    from speechops.scaling.forecast import seasonal_change
    assert seasonal_change(10.0, 10.0, 15.0) == pytest.approx(15.0)      # within 2x: the ratio, as before
    assert seasonal_change(0.0, 0.0, 65.0) == pytest.approx(65.0)        # from zero: the rise itself
    assert seasonal_change(2.0, 1.0, 65.0) == pytest.approx(2.0 + 2.0 * 64.0)   # steeper: the rise, in proportion
    assert seasonal_change(65.0, 65.0, 0.0) == pytest.approx(0.0)        # closing


def test_holt_winters_follows_the_clock_through_nightly_gaps():
    # Opening hours with the nights missing (no rows), as a trace with gaps has them: the
    # baseline stays near the demand instead of running away on a trend across the gap.
    rng = np.random.default_rng(2)
    hw = HoltWintersForecaster(lead=180.0)
    monday = 4 * DAY
    errors = []
    for t in np.arange(monday, monday + 10 * DAY, 15.0):
        if not 8 * 3600 <= t % DAY < 18 * 3600:
            continue                                   # no row at night
        value = _opening_hours(float(t), rng)
        if t > monday + 5 * DAY and 9 * 3600 <= t % DAY < 17 * 3600:
            errors.append(abs(hw.predict(float(t)).expected - 65.0 * (value > 0)))
        hw.observe(float(t), value)
    assert errors and np.median(errors) < 15
