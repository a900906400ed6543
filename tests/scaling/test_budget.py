"""The availability objective's error budget and the headroom controller that spends it."""

from __future__ import annotations

import pytest

from speechops.scaling.budget import BURN_WINDOWS, ErrorBudget, HeadroomController, HeadroomSettings


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
        c.update(t)
    assert c.sigmas == pytest.approx(HeadroomSettings().least)       # narrowed to the floor
    for _ in range(8):                               # two minutes of 10% refused
        c.record(t, 100.0, 10.0)
        t += 15.0
        c.update(t)
    assert c.sigmas == pytest.approx(HeadroomSettings().widen_step)  # one step, then it waits to see it act
    for _ in range(40):                              # still burning after the cooldown
        c.record(t, 100.0, 10.0)
        t += 15.0
        c.update(t)
    assert c.sigmas == pytest.approx(3 * HeadroomSettings().widen_step)
    wide = c.sigmas
    for _ in range(4 * 240):                         # clean again, but the window is overspent: no narrowing
        c.record(t, 100.0, 0.0)
        t += 15.0
        c.update(t)
    assert c.sigmas >= wide
