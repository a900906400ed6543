"""The availability objective's error budget and the headroom controller that spends it."""

from __future__ import annotations

import numpy as np
import pytest

from speechops.scaling.budget import BURN_WINDOWS, ErrorBudget, HeadroomController, HeadroomSettings
from speechops.scaling.controller import decide
from speechops.scaling.forecast import DAY, SeasonalForecaster
from speechops.scaling.policy import LiveSignals, Policy, PolicyConfig
from test_forecast import _opening_hours   # weekdays 08:00-18:00, 0 -> 65 streams in two minutes


def test_burn_rate_is_the_share_unserved_in_budgets_per_window():
    b = ErrorBudget(0.999, window=86400.0)
    for minute in range(120):                        # two hours, 100 requests a minute
        b.record(minute * 60.0, 100.0, 1.0 if minute >= 115 else 0.0)   # 1% refused in the last 5 minutes
    assert b.burn_rate(BURN_WINDOWS["5m"]) == pytest.approx(10.0)      # 1% against a 0.1% budget
    assert b.burn_rate(BURN_WINDOWS["1h"]) == pytest.approx(5 / 6000 / 0.001)
    assert b.availability() == pytest.approx(1 - 5 / 12000)
    assert b.remaining() == pytest.approx(1 - 5 / 12000 / 0.001)
    assert ErrorBudget(0.99).burn_rate(3600.0) is None                 # no demand: no rate


def test_the_window_rolls_and_old_minutes_are_forgotten():
    b = ErrorBudget(0.99, window=3600.0)
    b.record(0.0, 100.0, 50.0)
    for minute in range(1, 200):
        b.record(minute * 60.0, 100.0, 0.0)
    assert b.remaining() == pytest.approx(1.0)
    assert b.span() <= 2 * 3600.0 + 120.0


def test_objective_out_of_range_is_refused():
    with pytest.raises(ValueError, match="objective"):
        ErrorBudget(1.0)


def test_headroom_widens_on_a_fast_burn_and_narrows_while_the_budget_is_safe():
    c = HeadroomController(0.999, 2.0)
    t = 0.0
    for _ in range(4 * 240):                         # four clean hours at 15 s ticks
        c.record(t, 100.0, 0.0)
        t += 15.0
        c.update(t, judged=True)
    assert c.sigmas == pytest.approx(HeadroomSettings().least)       # narrowed to the floor
    for _ in range(8):                               # two minutes of 10% refused
        c.record(t, 100.0, 10.0)
        t += 15.0
        c.update(t, judged=True)
    assert c.sigmas == pytest.approx(HeadroomSettings().widen_step)  # one step, then it waits to see it act
    for _ in range(40):                              # still burning after the cooldown
        c.record(t, 100.0, 10.0)
        t += 15.0
        c.update(t, judged=True)
    assert c.sigmas == pytest.approx(3 * HeadroomSettings().widen_step)
    wide = c.sigmas
    for _ in range(4 * 240):                         # clean again, but the window is overspent: no narrowing
        c.record(t, 100.0, 0.0)
        t += 15.0
        c.update(t, judged=True)
    assert c.sigmas >= wide


def test_misses_before_the_forecaster_is_judged_are_reported_but_do_not_move_the_band():
    c = HeadroomController(0.999, 2.0)
    t = 0.0
    for _ in range(40):                              # ten minutes of 10% refused, forecaster new
        c.record(t, 100.0, 10.0)
        t += 15.0
        assert c.update(t, judged=False) == 2.0      # the tier's width, whatever the burn
    assert c.budget.availability() == pytest.approx(0.9)            # every miss reported
    assert c.burn_rates()["5m"] == pytest.approx(100.0)
    assert c.acted.availability() is None                            # none acted on
    for _ in range(240):                             # judged from now on, and a clean hour
        c.record(t, 100.0, 0.0)
        t += 15.0
        c.update(t, judged=True)
    assert c.sigmas < 2.0                            # the cold start's burn does not hold it wide
    assert c.budget.availability() < 0.99 and c.acted.availability() == 1.0


T0 = 4 * DAY                                         # 1970-01-05, a Monday


class Replay:
    """The operator's tick (`decide`) over a demand series: the pods a tick asks to serve
    are ready by the next (the lead time covers their start), and what finds no capacity
    is refused, as the gateways' counters would say."""

    def __init__(self, forecaster: SeasonalForecaster, headroom: HeadroomController):
        self.cfg = PolicyConfig(streams_per_replica=4, max_replicas=1000, availability=headroom.budget.objective)
        self.policy, self.forecaster, self.headroom = Policy(self.cfg), forecaster, headroom
        self.serving, self.sigmas = 1, []

    def run(self, start: float, end: float, demand) -> None:
        for t in np.arange(start, end, 15.0):
            d = demand(float(t))
            self.headroom.record(float(t), d, max(d - self.serving * self.cfg.streams_per_replica, 0.0))
            self.forecaster.observe(float(t), d)
            decision, _, _ = decide(self.policy, LiveSignals(now=float(t), replicas=self.serving, active_streams=d,
                                                             ready_replicas=self.serving), self.forecaster,
                                    self.cfg.lead_time, self.headroom)
            self.serving = decision.serving
            self.sigmas.append((float(t), self.headroom.sigmas, self.headroom.learning))


def test_an_opening_hours_cold_start_is_reported_and_the_band_learns_from_the_second_day():
    rng = np.random.default_rng(4)
    demand = lambda t: _opening_hours(t, rng)                          # noqa: E731
    r = Replay(SeasonalForecaster(lead=180.0, band_sigmas=2.5), HeadroomController(0.9999, 2.5))
    r.run(T0, T0 + DAY, demand)                      # the first Monday: no history at the opening
    monday = r.headroom.budget.totals(DAY)
    assert monday[1] > 0                             # the opening found too few pods, and that is reported
    assert r.headroom.budget.availability() < 0.9999 and r.headroom.budget.remaining() < 0
    assert all(s == 2.5 and not learning for _, s, learning in r.sigmas)   # the band held the tier's width
    assert r.headroom.acted.totals(DAY) == (0.0, 0.0)
    r.run(T0 + DAY, T0 + 5 * DAY, demand)            # Tuesday to Friday: the profile knows the opening
    assert r.forecaster.judged and r.headroom.learning
    # Monday's misses still count in what is reported; the band moves on the rest alone.
    assert r.headroom.budget.totals(5 * DAY)[1] >= monday[1]
    assert r.headroom.acted.totals(5 * DAY)[1] < monday[1]
    assert min(s for _, s, _ in r.sigmas) < 2.5      # a safe budget narrowed the band


def test_a_restart_holds_the_tiers_band_until_the_forecaster_has_a_day_again():
    rng = np.random.default_rng(6)
    demand = lambda t: _opening_hours(t, rng)                          # noqa: E731
    history = np.arange(T0, T0 + 3 * DAY, 60.0)                       # what Prometheus holds, per minute
    values = [demand(float(t)) for t in history]
    # Restarted with the history in Prometheus: the forecaster is fed it on the first tick
    # (as `_feed_history` does), so the budget moves the band from the start.
    fed = SeasonalForecaster(lead=180.0, band_sigmas=2.0)
    fed.observe_many(history, values)
    warm = Replay(fed, HeadroomController(0.999, 2.0))
    warm.run(T0 + 3 * DAY, T0 + 3 * DAY + 3600.0, demand)
    assert all(learning for _, _, learning in warm.sigmas)
    # Restarted without it (a new Prometheus, or a fresh pipeline): a cold start again. The
    # opening's misses are reported, the band holds the tier's width until a day is seen.
    cold = Replay(SeasonalForecaster(lead=180.0, band_sigmas=2.0), HeadroomController(0.999, 2.0))
    cold.run(T0 + 3 * DAY, T0 + 4 * DAY + 3600.0, demand)
    before = [(s, learning) for t, s, learning in cold.sigmas if t < T0 + 4 * DAY]
    assert set(before) == {(2.0, False)}
    assert cold.headroom.budget.totals(2 * DAY)[1] > 0 and cold.headroom.acted.totals(2 * DAY) == (0.0, 0.0)
    assert cold.sigmas[-1][2]                        # a day on, it learns


def test_a_tick_without_a_forecast_holds_the_width_the_budget_set():
    # Prometheus down: no forecaster reaches the tick, and the band keeps what it learned.
    c = HeadroomController(0.999, 2.0)
    for i in range(240):
        c.record(15.0 * i, 100.0, 0.0)
        c.update(15.0 * (i + 1), judged=True)
    learned = c.sigmas
    assert learned < 2.0
    policy = Policy(PolicyConfig(streams_per_replica=4))
    decide(policy, LiveSignals(now=3700.0, replicas=30, active_streams=100.0), None, 180.0, c)
    assert c.sigmas == learned and not c.learning
