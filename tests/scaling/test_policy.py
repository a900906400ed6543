"""Policy decisions, drain planning and the status a tick writes, as tables."""

from dataclasses import replace

import pytest

from speechops_contract.api import parse_spec
from speechops.scaling.controller import status_changes
from speechops.scaling.forecast import Forecast
from speechops.scaling.policy import (DRAINING_COST, REMOVABLE_COST, LiveSignals, PodLoad, Policy, PolicyConfig,
                                      plan_replicas)

# The scale-down limit is off here (its own tests below turn it on).
CFG = PolicyConfig(streams_per_replica=10, target_utilization=0.8, min_replicas=1, max_replicas=20,
                   scale_down_delay=300.0, lead_time=180.0, reserve_mode="auto", reserve_share=0.5,
                   scale_down_max_share=1.0)


def fc(expected, upper):
    return Forecast(at=1180.0, horizon=180.0, expected=expected, upper=upper, lower=max(2 * expected - upper, 0),
                    model="level", history=86400.0)


def sig(now=1000.0, replicas=5, streams=30.0, backlog=None, deployment=None):
    return LiveSignals(now=now, replicas=replicas, active_streams=streams, backlog_chunks=backlog,
                       deployment_replicas=deployment)


@pytest.mark.parametrize("config, signals, forecast, replicas, reason", [
    (CFG, sig(replicas=5), fc(60, 72), 8, "ScaleUp"),                    # max(ceil(60 / 8), ceil(72 / 9))
    (CFG, sig(replicas=5), fc(60, 95), 11, "ScaleUp"),                   # the band beyond the headroom: ceil(95 / 9)
    (replace(CFG, band_at_full_capacity=False), sig(replicas=5), fc(60, 72), 9, "ScaleUp"),  # ceil(72 / 8)
    (CFG, sig(replicas=5, streams=100), fc(60, 72), 13, "ScaleUp"),      # live need wins: ceil(100 / 8)
    (CFG, sig(replicas=8, streams=60), fc(68, 75), 8, "Steady"),         # within 10% tolerance, band fits in 80
    (CFG, sig(replicas=8, streams=60), fc(68, 85), 10, "ScaleUp"),       # band beyond full capacity: ceil(85 / 9)
    (CFG, sig(replicas=5, streams=10, backlog=500), fc(5, 6), 5, "ScaleDownDelayed"),  # 500 chunks of 32 ms: 16 stream-seconds, 26 streams -> 4; delay
    (CFG, sig(replicas=5), fc(500, 600), 20, "ScaleUp"),                 # clamped to max
    (CFG, sig(replicas=5, streams=0), fc(0, 0), 5, "ScaleDownDelayed"),  # wants 1 (min), too early
    (CFG, sig(replicas=5, streams=None), None, 5, "NoData"),             # nothing known: hold
    (CFG, sig(replicas=0, streams=None), None, 1, "NoData"),             # never below minReplicas
    (CFG, sig(replicas=0, streams=None, deployment=4), None, 4, "NoData"),  # pods not made yet: hold the Deployment's
    (CFG, sig(replicas=3, streams=40), None, 5, "ScaleUp"),              # no forecast: reactive on live
    (PolicyConfig(mode="reactive", streams_per_replica=10, max_replicas=20), sig(replicas=2, streams=40),
     fc(500, 600), 5, "ScaleUp"),                                        # reactive ignores the forecast
    (PolicyConfig(mode="fixed", min_replicas=3, max_replicas=20), sig(replicas=7), fc(500, 600), 3, "Fixed"),
], ids=["forecast-expected-at-target", "forecast-upper-at-capacity", "forecast-upper-at-target", "live-floor",
        "tolerance-holds", "tolerance-yields-to-band", "backlog-floor", "max-clamp", "down-delayed", "no-data-holds",
        "no-data-keeps-min-replicas", "no-data-holds-pods-not-yet-created", "fallback-reactive", "reactive-mode", "fixed-mode"])
def test_first_decision(config, signals, forecast, replicas, reason):
    d = Policy(config).decide(signals, forecast)
    assert (d.replicas, d.reason) == (replicas, reason)


def test_scale_down_waits_for_the_whole_window_and_takes_its_highest_recommendation():
    p = Policy(CFG)
    assert p.decide(sig(now=0, replicas=10, streams=70), fc(70, 75)).replicas == 10
    # Demand falls; recommendations 4 for 300 s: hold until the window is over.
    for now in range(15, 300, 15):
        d = p.decide(sig(now=now, replicas=10, streams=25), fc(25, 30))
        assert d.replicas == 10 and d.reason == "ScaleDownDelayed", now
    d = p.decide(sig(now=315, replicas=10, streams=25), fc(25, 30))
    assert (d.replicas, d.reason) == (4, "ScaleDown")
    assert "scaling 10→4" in d.message and "forecast 25 streams" in d.message


def test_scale_up_is_immediate_even_inside_the_window():
    p = Policy(CFG)
    p.decide(sig(now=0, replicas=4), fc(30, 32))
    d = p.decide(sig(now=15, replicas=4), fc(100, 120))
    assert (d.replicas, d.reason) == (14, "ScaleUp")   # max(ceil(100 / 8), ceil(120 / 9))


def test_min_replicas_is_a_floor_and_missing_data_never_scales_to_zero():
    cfg = PolicyConfig(streams_per_replica=10, min_replicas=2, max_replicas=9, scale_down_delay=0)
    p = Policy(cfg)
    assert p.decide(sig(now=0, replicas=3, streams=0), fc(0, 0)).replicas == 2
    zero = PolicyConfig(streams_per_replica=10, min_replicas=0, max_replicas=9, scale_down_delay=0)
    q = Policy(zero)
    assert q.decide(sig(now=0, replicas=3, streams=None), None).replicas == 3


def test_reserve_follows_the_band():
    d = Policy(CFG).decide(sig(replicas=5), fc(40, 72))   # band 32 streams, share 0.5 -> 16 -> 2 pods
    assert d.reserve == 2
    fixed = PolicyConfig(reserve_mode="fixed", reserve_count=3)
    assert Policy(fixed).decide(sig(), fc(40, 72)).reserve == 3


def test_config_comes_from_the_spec_and_the_tier():
    cfg = PolicyConfig.from_spec(parse_spec({"profile": "realtime", "capacity": {"streamsPerReplica": 32},
                                             "scaling": {"leadTime": "4m", "scaleDownDelay": "10m"}}))
    assert (cfg.streams_per_replica, cfg.lead_time, cfg.scale_down_delay, cfg.headroom_sigmas) == (32, 240, 600, 2.5)
    assert (cfg.scale_down_max_share, cfg.scale_down_period) == (0.5, 600)      # the spec's defaults
    limited = PolicyConfig.from_spec(parse_spec({"scaling": {"scaleDownMaxPercent": 20, "scaleDownPeriod": "30m"}}))
    assert (limited.scale_down_max_share, limited.scale_down_period) == (0.2, 1800)


LIMITED = replace(CFG, scale_down_delay=0.0, scale_down_max_share=0.5, scale_down_period=600.0)


def test_a_collapse_halves_the_fleet_at_most_once_per_period():
    # 20 replicas, then the traffic stops (an upstream outage): not 1 replica, but 10, then
    # 5 once the 20 have left the 10-minute window, and so on.
    p = Policy(LIMITED)
    assert p.decide(sig(now=0, replicas=20, streams=160), fc(160, 170)).replicas == 20
    d = p.decide(sig(now=15, replicas=20, streams=0), fc(0, 0))
    assert (d.replicas, d.reason) == (10, "ScaleDown")
    assert "scaling 20→10 (wants 1; scaleDownMaxPercent lets at most 50% of the last 600s' peak of 20 go)" in d.message
    d = p.decide(sig(now=30, replicas=10, streams=0), fc(0, 0))
    assert (d.replicas, d.reason) == (10, "ScaleDownLimited") and "holding 10 (wants 1;" in d.message
    for now in range(45, 615, 15):
        assert p.decide(sig(now=now, replicas=10, streams=0), fc(0, 0)).replicas == 10, now
    assert p.decide(sig(now=630, replicas=10, streams=0), fc(0, 0)).replicas == 5
    # The traffic comes back: scale-up is never limited.
    assert p.decide(sig(now=645, replicas=5, streams=160), fc(160, 170)).replicas == 20


def test_a_restarted_scaler_counts_the_running_replicas_as_the_peak():
    d = Policy(LIMITED).decide(sig(now=0, replicas=12, streams=0), fc(0, 0))
    assert (d.replicas, d.reason) == (6, "ScaleDown")


def test_the_limit_lifted_goes_straight_to_what_demand_needs():
    d = Policy(replace(LIMITED, scale_down_max_share=1.0)).decide(sig(now=0, replicas=12, streams=0), fc(0, 0))
    assert (d.replicas, d.reason) == (1, "ScaleDown")


def test_what_the_next_tick_does_not_need_waits_as_warm_spares():
    # The fleet is sized for the lead time (ceil(95 / 9) = 11), but the next tick needs
    # ceil(40 / 8) = 5 serving: 6 pods drain and stay, taken back at once if demand rises.
    near = replace(fc(38, 40), horizon=15.0)
    d = Policy(CFG).decide(sig(replicas=5, streams=36), fc(60, 95), near)
    assert (d.replicas, d.serving) == (11, 5)
    assert d.message.endswith("scaling 5→11, 6 of them warm spares")
    # Live streams beyond the near forecast serve all the same.
    assert Policy(CFG).decide(sig(replicas=5, streams=70), fc(60, 95), near).serving == 9
    # No near forecast, reactive mode, or spares turned off: every pod serves.
    assert Policy(CFG).decide(sig(replicas=5, streams=36), fc(60, 95)).serving == 11
    assert Policy(replace(CFG, warm_spares=False)).decide(sig(replicas=5, streams=36), fc(60, 95), near).serving == 11
    reactive = replace(CFG, mode="reactive")
    assert Policy(reactive).decide(sig(replicas=5, streams=36), fc(60, 95), near).serving == 5 == \
        Policy(reactive).decide(sig(replicas=5, streams=36), fc(60, 95), near).replicas


def test_a_scale_down_is_decided_once_while_its_pods_drain():
    p = Policy(replace(CFG, scale_down_delay=0.0))
    assert p.decide(sig(now=0, replicas=10, streams=80), fc(80, 85)).replicas == 10
    d = p.decide(sig(now=15, replicas=10, streams=40), fc(40, 45))
    assert (d.reason, d.previous, d.replicas) == ("ScaleDown", 10, 5)
    # Five pods still drain their streams: the fleet is the 5 the last tick asked for.
    d = p.decide(LiveSignals(now=30, replicas=10, active_streams=40, draining=5), fc(40, 45))
    assert (d.reason, d.previous, d.replicas) == ("Steady", 5, 5)
    # A pod lost outside the scaler's plan counts, and is replaced.
    d = p.decide(LiveSignals(now=45, replicas=4, active_streams=40, draining=0), fc(40, 45))
    assert (d.reason, d.previous, d.replicas) == ("ScaleUp", 4, 5)


def pod(name, streams, ready=True, draining=False):
    return PodLoad(name=name, streams=streams, ready=ready, draining=draining)


@pytest.mark.parametrize("pods, target, replicas, drain, remove", [
    ([pod("a", 5), pod("b", 0), pod("c", 9)], 3, 3, (), ()),                       # steady
    ([pod("a", 5), pod("b", 0), pod("c", 9)], 5, 5, (), ()),                       # scale up: 2 more
    ([pod("a", 5), pod("b", 0), pod("c", 9)], 2, 3, ("b",), ()),                   # empty pod drains first
    ([pod("a", 5), pod("b", 0, draining=True), pod("c", 9)], 2, 2, (), ("b",)),   # drained and empty: goes
    ([pod("a", 5), pod("b", 2, draining=True), pod("c", 9)], 2, 3, (), ()),       # still streaming: stays
    ([pod("a", 5), pod("n", None, ready=False), pod("c", 9)], 2, 2, (), ("n",)),  # never ready: goes first
    ([pod("a", None), pod("c", None)], 1, 2, (), ()),                              # silent pods: never cut
    ([pod("a", 5), pod("b", 2, draining=True, ready=False)], 1, 2, (), ()),        # draining is unready: still kept
    ([pod("a", 5), pod("b", None, draining=True, ready=False)], 1, 1, (), ("b",)), # gateway gone: nothing to keep
], ids=["steady", "up", "drain-emptiest", "remove-drained", "keep-draining", "not-ready-first",
        "unknown-load-kept", "draining-unready-kept", "draining-gone-removed"])
def test_plan_replicas(pods, target, replicas, drain, remove):
    plan = plan_replicas(pods, target)
    assert (plan.replicas, plan.drain, plan.remove) == (replicas, drain, remove)


@pytest.mark.parametrize("pods, target, replicas, undrain", [
    ([pod("a", 5), pod("b", 3, draining=True)], 2, 2, ("b",)),                     # back at once, no new pod
    ([pod("a", 5), pod("b", 3, draining=True)], 3, 3, ("b",)),                     # back, and one new pod
    ([pod("a", 5), pod("b", 1, draining=True), pod("c", 7, draining=True)], 2, 3, ("c",)),  # fullest first
    ([pod("a", 5), pod("b", 0, draining=True)], 2, 2, ("b",)),                     # empty spare: back, no new pod
    ([pod("a", 5), pod("b", 0, draining=True), pod("c", 4, draining=True)], 2, 2, ("c",)),  # streams first
    ([pod("a", 5), pod("b", 3, draining=True)], 1, 2, ()),                         # no need: keeps draining
], ids=["revive", "revive-and-add", "fullest-first", "empty-spare-revived", "spares-last", "no-need"])
def test_scale_up_takes_draining_pods_back_first(pods, target, replicas, undrain):
    plan = plan_replicas(pods, target)
    assert (plan.replicas, plan.undrain, plan.drain) == (replicas, undrain, ())
    assert all(plan.costs[name] < DRAINING_COST for name in undrain)


@pytest.mark.parametrize("pods, serving, keep, replicas, drain, undrain, remove", [
    # Two serve, three wanted: the emptiest ready pod drains now and is kept as a spare.
    ([pod("a", 5), pod("b", 3), pod("c", 1)], 2, 3, 3, ("c",), (), ()),
    # A spare that has emptied stays while the fleet wants it.
    ([pod("a", 5), pod("b", 3), pod("c", 0, draining=True)], 2, 3, 3, (), (), ()),
    # The fleet shrinks: an empty spare goes at once; a draining pod with streams waits.
    ([pod("a", 5), pod("b", 3), pod("c", 0, draining=True), pod("d", 2, draining=True)], 2, 3, 3, (), (), ("c",)),
    # Demand rises: spares serve again at once, and the fleet grows by a new pod.
    ([pod("a", 5), pod("c", 0, draining=True)], 2, 3, 3, (), ("c",), ()),
    # Fewer wanted than run: spares go before pods still starting.
    ([pod("a", 5), pod("n", None, ready=False), pod("c", 0, draining=True)], 1, 2, 2, (), (), ("c",)),
], ids=["drain-to-spare", "spare-kept", "shrink-spare-first", "spare-serves-again", "spare-before-starting"])
def test_pods_beyond_the_serving_target_are_drained_and_kept_as_spares(pods, serving, keep, replicas, drain, undrain,
                                                                       remove):
    plan = plan_replicas(pods, serving, keep)
    assert (plan.replicas, plan.drain, plan.undrain, plan.remove) == (replicas, drain, undrain, remove)
    for name in remove:
        assert plan.costs[name] == REMOVABLE_COST
    for p in pods:    # a kept spare is not protected like a streaming one: it goes first next time
        if p.draining and p.streams == 0 and p.name not in set(remove) | set(undrain):
            assert plan.costs[p.name] == 0


def test_deletion_costs_put_removable_pods_first_and_streaming_draining_pods_last():
    plan = plan_replicas([pod("a", 5), pod("b", 0, draining=True), pod("c", 2, draining=True), pod("d", 1)], 2)
    assert plan.costs == {"a": 5, "b": REMOVABLE_COST, "c": DRAINING_COST + 2, "d": 1}
    assert plan.replicas == 3


FORECAST = {"time": "2026-01-01T00:00:00Z", "expected": 60.0, "upper": 72.0, "desiredReplicas": 8}


@pytest.mark.parametrize("current, wanted, changes", [
    ({"desiredReplicas": 8, "activeStreams": 40}, {"desiredReplicas": 8, "activeStreams": 40}, {}),
    ({"desiredReplicas": 8}, {"desiredReplicas": 9}, {"desiredReplicas": 9}),
    ({}, {"activeStreams": None}, {}),
    ({"forecast": FORECAST}, {"forecast": {**FORECAST, "time": "2026-01-01T00:00:15Z"}}, {}),
    ({"forecast": FORECAST}, {"forecast": {**FORECAST, "upper": 80.0}}, {"forecast": {**FORECAST, "upper": 80.0}}),
    ({}, {"forecast": FORECAST}, {"forecast": FORECAST}),
], ids=["unchanged-writes-nothing", "changed-field", "unknown-stays-unset", "forecast-time-alone-is-not-new",
        "forecast-band-moved", "first-forecast"])
def test_a_tick_writes_only_the_status_that_changed(current, wanted, changes):
    assert status_changes(current, wanted) == changes


def test_plan_replicas_does_what_plan_counts_says_the_backtest_fleet_does():
    # The operator's named plan and the backtest's counted one are one rule: over many
    # random fleets, the plan's drains, undrains, removals and new pods are plan_counts'.
    import random

    from speechops.scaling.policy import plan_counts
    rng = random.Random(7)
    for _ in range(2000):
        pods = []
        for k in range(rng.randint(0, 12)):
            draining = rng.random() < 0.4
            ready = rng.random() < 0.8
            streams = rng.choice([None, 0.0, 0.0, 3.0, 9.0])
            pods.append(PodLoad(f"p{k:02d}", streams, ready, draining))
        serving, keep = rng.randint(0, 12), rng.randint(0, 14)
        plan = plan_replicas(pods, serving, keep)
        live = [p for p in pods if not p.draining]
        ready = [p for p in live if p.ready]
        revivable = [p for p in pods if p.draining and not (p.streams is None and not p.ready)]
        c = plan_counts(ready=len(ready), answered=sum(p.streams is not None for p in ready),
                        holding=sum(p.streams != 0 for p in revivable), spares=sum(p.streams == 0 for p in revivable),
                        starting=len(live) - len(ready), gone=sum(p.draining for p in pods) - len(revivable),
                        serving_target=serving, keep_target=keep)
        gone = sum(p.draining for p in pods) - len(revivable)
        assert (len(plan.undrain), len(plan.drain), len(plan.remove) - gone) == \
            (c.undrain, c.drain, c.remove_spares + c.remove_starting)
        assert plan.replicas == len(pods) - len(plan.remove) + c.start
