"""The scaler's metrics carry the names the chart's dashboard and alerts query, and
follow real scaler ticks."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from speechops_contract import api, names
from speechops.scaling.metrics import OperatorMetrics, record_tick
from speechops.scaling import controller


def _pod(name: str, ready: bool) -> dict:
    return {"metadata": {"name": name, "labels": {names.LABEL_PIPELINE: "assistant"}},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": "2026-11-25T10:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": "2026-11-25T10:01:00Z"}]}}


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if not s.name.endswith("_created")}


def _tick(spec_raw: dict, pods: list[dict]):
    spec = api.parse_spec(spec_raw)
    state = controller.state_for({}, spec)
    return controller.tick(state, spec, "speech", "assistant", 1_800_000_000.0, None, pods,
                           {p["metadata"]["name"]: 3.0 for p in pods})


def test_tick_without_prometheus_counts_a_fallback_and_sets_replicas():
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    pods = [_pod("w-1", True), _pod("w-2", False)]
    result = _tick({"scaling": {"mode": "predictive", "prometheusUrl": "http://127.0.0.1:9/"}}, pods)
    assert not result.scaling_active
    record_tick("speech", "assistant", result, pods, metrics)
    record_tick("speech", "assistant", result, pods, metrics)
    got = _samples(registry)
    key = (("namespace", "speech"), ("pipeline", "assistant"))
    assert got[(names.M_OP_DESIRED_REPLICAS, key)] == result.decision.replicas
    assert got[(names.M_OP_READY_REPLICAS, key)] == 1
    assert got[(names.M_OP_PLACEHOLDERS, key)] == result.decision.reserve
    assert got[(names.M_OP_SPARES, key)] == 0     # no forecast, no spares: every pod serves
    fallback = (names.M_OP_SCALER_FALLBACKS, tuple(sorted(key + (("reason", result.condition_reason),))))
    assert got[fallback] == 2


def test_fixed_mode_is_no_fallback_and_forget_drops_the_series():
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    result = _tick({"scaling": {"mode": "fixed"}, "capacity": {"minReplicas": 3, "maxReplicas": 5}}, [])
    record_tick("speech", "assistant", result, [], metrics)
    got = _samples(registry)
    assert not [k for k in got if k[0] == names.M_OP_SCALER_FALLBACKS]
    assert got[(names.M_OP_DESIRED_REPLICAS, (("namespace", "speech"), ("pipeline", "assistant")))] == 3
    metrics.forget("speech", "assistant")
    assert not [k for k in _samples(registry) if k[0].startswith("speechops_operator_")]


def test_warm_spares_are_the_desired_workers_that_do_not_serve():
    from dataclasses import replace
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    result = _tick({"scaling": {"mode": "fixed"}, "capacity": {"minReplicas": 5, "maxReplicas": 5}}, [])
    result = replace(result, decision=replace(result.decision, serving=3))
    record_tick("speech", "assistant", result, [], metrics)
    key = (("namespace", "speech"), ("pipeline", "assistant"))
    assert _samples(registry)[(names.M_OP_SPARES, key)] == 2


def test_metric_names_are_the_shared_names():
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.record("ns", "p", desired=1, ready=1, placeholders=0, forecast_streams=12.5, fallback_reason="NoHistory",
                   upper_streams=20.0, band_coverage=0.97, band_target=0.977,
                   availability={"objective": 0.999, "achieved": 0.9995, "remaining": 0.5, "sigmas": 2.0,
                                 "burn_5m": 0.0, "burn_30m": 0.1, "burn_1h": 0.2, "burn_6h": 0.5})
    exported = {k[0] for k in _samples(registry)}
    reconciler = {names.M_OP_RECONCILES, names.M_OP_ERRORS, names.M_OP_RECONCILE_DURATION, names.M_OP_CHILD_WRITES}
    assert exported == {v for k, v in vars(names).items() if k.startswith("M_OP_")} - reconciler


def test_band_series_go_when_there_is_no_band_to_judge():
    # A stale coverage would hold the SpeechopsForecastBandTooNarrow alert up after the
    # forecast stopped (Prometheus gone, a switch to reactive mode).
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    key = (("namespace", "ns"), ("pipeline", "p"))
    metrics.record("ns", "p", desired=3, ready=3, placeholders=0, forecast_streams=30.0, fallback_reason=None,
                   upper_streams=41.0, band_coverage=0.91, band_target=0.977)
    got = _samples(registry)
    assert (got[(names.M_OP_FORECAST_UPPER, key)], got[(names.M_OP_BAND_COVERAGE, key)],
            got[(names.M_OP_BAND_TARGET, key)]) == (41.0, 0.91, 0.977)
    metrics.record("ns", "p", desired=3, ready=3, placeholders=0, forecast_streams=None,
                   fallback_reason="PrometheusUnavailable")
    assert not {names.M_OP_FORECAST_UPPER, names.M_OP_BAND_COVERAGE, names.M_OP_BAND_TARGET} & {
        k[0] for k in _samples(registry)}


def test_reconciler_metrics_are_the_shared_names():
    from speechops import operator_metrics
    assert {operator_metrics.RECONCILES._name + "_total", operator_metrics.ERRORS._name + "_total",
            operator_metrics.DURATION._name, operator_metrics.WRITES._name + "_total"} == {
        names.M_OP_RECONCILES, names.M_OP_ERRORS, names.M_OP_RECONCILE_DURATION, names.M_OP_CHILD_WRITES}


def test_a_dry_run_announces_a_recommendation_once_not_every_tick():
    """Something else scales the fleet in a dry run, so the recommendation differs from the
    running replicas on most ticks: only a new recommendation is news."""
    spec = api.parse_spec({"scaling": {"mode": "reactive", "prometheusUrl": "http://127.0.0.1:9/",
                                       "scaleDownDelay": "0s", "dryRun": True}})
    state = controller.state_for({}, spec)
    pods = [_pod(f"w-{i}", True) for i in range(4)]

    def tick(now: float, streams: float):
        return controller.tick(state, spec, "speech", "assistant", now, None, pods,
                               {p["metadata"]["name"]: streams for p in pods})

    # 12 streams need 1 pod of 64 at 0.8; the scale-down limit lets half of the 4 go.
    first = tick(1_800_000_000.0, 3.0)
    assert first.withheld == "dry run, not applied" and first.announce and first.decision.replicas == 2
    assert first.message.startswith("dry run, not applied: ") and "scaling 4→2" in first.message
    assert first.status_patch("t")["desiredReplicas"] == 2
    assert "dryRun: recommending only" in first.condition_message
    assert not tick(1_800_000_015.0, 3.0).announce   # the same advice, fleet still at 4
    assert tick(1_800_000_030.0, 30.0).announce      # 120 streams: 3 pods


def test_an_hpa_on_the_workers_makes_the_scaler_recommend_only():
    spec = api.parse_spec({"scaling": {"mode": "reactive", "prometheusUrl": "http://127.0.0.1:9/",
                                       "scaleDownDelay": "0s"}})
    state = controller.state_for({}, spec)
    pods = [_pod(f"w-{i}", True) for i in range(4)]
    result = controller.tick(state, spec, "speech", "assistant", 1_800_000_000.0, None, pods,
                             {p["metadata"]["name"]: 3.0 for p in pods}, rival_autoscalers=("cpu", "asr-load"))
    assert (result.scaling_active, result.condition_reason) == (False, "ConflictingAutoscaler")
    assert "HorizontalPodAutoscaler asr-load, cpu also scales assistant-worker" in result.condition_message
    assert result.withheld == "not applied, HorizontalPodAutoscaler asr-load, cpu scales assistant-worker"
    assert result.message.startswith(result.withheld + ": ") and result.announce
    registry = CollectorRegistry()
    record_tick("speech", "assistant", result, pods, OperatorMetrics(registry))
    assert not [k for k in _samples(registry) if k[0] == names.M_OP_SCALER_FALLBACKS]   # not a fallback
    # Deleted: the next tick applies again, and says so as a change from the running 4.
    again = controller.tick(state, spec, "speech", "assistant", 1_800_000_015.0, None, pods,
                            {p["metadata"]["name"]: 3.0 for p in pods})
    assert again.withheld == "" and again.announce and again.decision.changed


def test_without_prometheus_the_gateways_backlog_and_request_counters_are_used():
    # Two ready gateways: 20 live streams and 625 VAD chunks (32 ms) of backlog, 20
    # stream-seconds, need 40 / 12.8 -> 4 replicas; their counters feed the error budget.
    from speechops.scaling.signals import GatewayReading
    spec = api.parse_spec({"capacity": {"streamsPerReplica": 16}, "scaling": {"mode": "reactive"},
                           "reserve": {"mode": "none"}})
    state = controller.ScalerState.for_spec(spec)
    pods = [_pod("w-a", True), _pod("w-b", True)]
    first = {"w-a": GatewayReading(streams=12, backlog=300, admitted=100, refused=0),
             "w-b": GatewayReading(streams=8, backlog=325, admitted=50, refused=0)}
    result = controller.tick(state, spec, "speech", "assistant", 1_800_000_000.0, None, pods,
                             {"w-a": 12.0, "w-b": 8.0}, gateways=first)
    assert result.decision.live_need == 4
    assert result.availability["achieved"] is None          # a pod's first reading is its baseline
    later = {"w-a": GatewayReading(streams=12, backlog=0, admitted=190, refused=10),
             "w-b": GatewayReading(streams=8, backlog=0, admitted=5, refused=0)}   # w-b restarted
    result = controller.tick(state, spec, "speech", "assistant", 1_800_000_015.0, None, pods,
                             {"w-a": 12.0, "w-b": 8.0}, gateways=later)
    assert result.availability["achieved"] == pytest.approx(1 - 10 / 105)
    assert result.status_patch("now")["availability"]["objective"] == 99.9
