"""The controller tick against a real Prometheus: history, live demand, and failures."""

from __future__ import annotations

import http.server
import math
import threading
import time

import numpy as np
import pytest

from speechops_contract import names
from speechops_contract.api import parse_spec
from speechops.scaling import controller
from speechops.scaling.signals import PrometheusSource, SignalError, queries_for

NAMESPACE, PIPELINE = "speech", "callcenter"   # as backfilled by the prometheus fixture

pytestmark = pytest.mark.prometheus

SPEC = {"capacity": {"streamsPerReplica": 16, "minReplicas": 1, "maxReplicas": 100},
        "scaling": {"leadTime": "180s", "history": "14d"}}


def ready_pod(name, created="2026-01-01T00:00:00Z", ready_at="2026-01-01T00:01:30Z"):
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]}}


def run_tick(url, spec=SPEC, pods=(), streams=None, state=None, now=None, timeout=5.0):
    parsed = parse_spec(spec)
    state = state or controller.ScalerState.for_spec(parsed)
    source = PrometheusSource(url, timeout=timeout) if url else None
    return state, controller.tick(state, parsed, NAMESPACE, PIPELINE, now or time.time(), source,
                                  list(pods), streams or {})


def test_history_query_spans_weeks_in_chunks(prometheus):
    src = PrometheusSource(prometheus.url)
    q = queries_for({}, NAMESPACE, PIPELINE)["streams"]
    times, values = src.history(q, prometheus.end - 14 * 86400, prometheus.end)
    assert len(times) >= 14 * 1440 - 5            # more than one Prometheus range query's worth
    assert values.max() > 300 and values.min() < 60


def test_tick_forecasts_from_two_weeks_and_sizes_replicas(prometheus):
    now = prometheus.end + 30
    state, result = run_tick(prometheus.url, pods=[ready_pod("w-1"), ready_pod("w-2")], now=now)
    f = result.forecast
    assert result.scaling_active and result.condition_reason == "Forecasting"
    assert result.history_points >= 14 * 1440 - 5
    assert f is not None and f.history >= 13.9 * 86400 and "seasonal-weekly" in f.model or "level" in f.model
    truth = float(prometheus.demand(np.array([now + 180.0]))[0])
    assert f.expected == pytest.approx(truth, rel=0.25, abs=20)
    assert f.upper >= f.expected
    # Pods started in 90 s here, so the spec's 180 s lead stands.
    assert result.lead == 180
    # The policy's rule: expected demand and live streams at 80% of capacity, the band's top at 90%.
    need = max(math.ceil(max(f.expected, result.live_streams) / (16 * 0.8) - 1e-9),
               math.ceil(f.upper / (16 * 0.9) - 1e-9), 1)
    assert result.decision.replicas == max(need, 2) or result.decision.replicas == need
    status = result.status_patch("2026-01-01T00:00:00Z")
    assert status["desiredReplicas"] == result.decision.replicas
    assert status["forecast"]["horizon"] == "180s" and status["forecast"]["model"] == f.model
    # Two weeks scored at the lead time: the band's live calibration for the dashboard and
    # the SpeechopsForecastBandTooNarrow alert, against what the 2 sigma tier means.
    assert result.band_target == pytest.approx(0.977, abs=0.001)
    assert 0.9 <= result.band_coverage <= 1.0, result.band_coverage
    # The next tick only feeds what is new.
    _, again = run_tick(prometheus.url, state=state, now=now + 15)
    assert again.history_points <= 1


def test_the_capacity_the_gateways_measured_is_shown_and_an_overstated_one_warned(prometheus):
    now = prometheus.end + 30
    _, fits = run_tick(prometheus.url, pods=[ready_pod("w-1")], now=now)          # streamsPerReplica 16
    assert fits.measured_capacity == 12                      # the most any replica measured
    assert fits.status_patch("t")["measuredStreamsPerReplica"] == 12
    assert fits.capacity_condition()[:2] == (True, "WithinMeasured")
    _, over = run_tick(prometheus.url, spec={**SPEC, "capacity": {**SPEC["capacity"], "streamsPerReplica": 64}},
                       pods=[ready_pod("w-1")], now=now)
    status, reason, message = over.capacity_condition()
    assert (status, reason) == (False, "StreamsPerReplicaAboveMeasured")
    assert "streamsPerReplica is 64" in message and "at most 12 streams" in message
    assert over.scaling_active                                # informational: the scaler goes on
    _, unknown = run_tick(None, pods=[ready_pod("w-1")], streams={"w-1": 3.0}, now=now)
    assert unknown.capacity_condition() is None and "measuredStreamsPerReplica" not in unknown.status_patch("t")


def test_slow_pod_starts_lengthen_the_lead(prometheus):
    pods = [ready_pod("w-1", ready_at="2026-01-01T00:05:00Z")]     # 300 s to ready
    _, result = run_tick(prometheus.url, pods=pods, now=prometheus.end + 30)
    assert result.lead == 315 and result.forecast.horizon == 315


def test_partial_history_still_forecasts(prometheus):
    spec = {**SPEC, "scaling": {"history": "6h"}}
    _, result = run_tick(prometheus.url, spec=spec, now=prometheus.end + 30)
    assert result.scaling_active and result.forecast is not None
    assert "partial history" in result.condition_message


def test_unknown_series_falls_back_to_live_pod_counts(prometheus):
    spec = {**SPEC, "scaling": {"queries": {"streams": 'sum(nothing_here{pipeline="$pipeline"})'}}}
    _, result = run_tick(prometheus.url, spec=spec, pods=[ready_pod("w-1")], streams={"w-1": 30.0},
                         now=prometheus.end + 30)
    assert not result.scaling_active and result.condition_reason == "NoHistory"
    assert result.live_streams == 30.0 and result.decision.replicas >= 3


def test_bad_query_override_is_reported():
    with pytest.raises(SignalError) as err:
        queries_for({"stream": "x"}, NAMESPACE, PIPELINE)
    assert err.value.reason == "QueryInvalid"


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "garbage"

    def do_GET(self):  # noqa: N802
        if self.server.mode == "slow":
            time.sleep(2)
        body = b"<html>not prometheus</html>" if self.server.mode == "garbage" else b'{"status":"success","data":{"result":"x"}}'
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(params=["garbage", "wrong-shape", "slow"])
def bad_prometheus(request):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.mode = request.param
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_broken_prometheus_sets_a_reason_and_falls_back(bad_prometheus):
    mode, url = bad_prometheus
    pods = [ready_pod("w-1"), ready_pod("w-2")]
    _, result = run_tick(url, pods=pods, streams={"w-1": 10.0, "w-2": 12.0}, timeout=0.5)
    expected = {"garbage": "PrometheusGarbage", "wrong-shape": "PrometheusGarbage", "slow": "PrometheusSlow"}[mode]
    assert (result.scaling_active, result.condition_reason) == (False, expected)
    assert result.live_streams == 22.0 and result.decision.replicas == 2      # reactive on gateway counts


def test_prometheus_down_and_silent_gateways_hold_replicas():
    pods = [ready_pod(f"w-{i}") for i in range(4)]
    _, result = run_tick("http://127.0.0.1:9", pods=pods, streams={}, timeout=0.5)
    assert (result.scaling_active, result.condition_reason) == (False, "PrometheusUnavailable")
    assert result.decision.reason == "NoData" and result.decision.replicas == 4 and result.plan.replicas == 4
    assert "holding replicas" in result.condition_message


def test_pods_the_next_tick_does_not_need_wait_drained_as_warm_spares(prometheus):
    # Demand that climbs 0.05 streams a second for an hour, then falls back (a sawtooth that
    # Prometheus computes from time()), with this moment half-way up the climb: the fleet
    # sized for three minutes ahead is larger than what live streams and the next tick
    # need. The pods in between drain now, the empty ones first, and stay as warm spares.
    now = time.time()
    phase = 3600 - (now % 3600) + 1800          # `now` half-way up the climb, 30 min from the drop
    spec = {"capacity": {"streamsPerReplica": 1, "minReplicas": 1, "maxReplicas": 500},
            "scaling": {"leadTime": "180s", "history": "3d",
                        "queries": {"streams": f"vector(((time() + {phase:.0f}) % 3600) * 0.05)"}}}
    pods = [ready_pod(f"w-{i:03d}") for i in range(140)]
    streams = {f"w-{i:03d}": float(i % 2) for i in range(140)}     # every other pod empty
    state, result = run_tick(prometheus.url, spec=spec, pods=pods, streams=streams, now=now)
    d, plan = result.decision, result.plan
    assert result.condition_reason == "Forecasting" and result.live_streams == pytest.approx(90, abs=1)
    spares = d.replicas - d.serving
    assert spares >= 5 and d.serving >= math.ceil(result.live_streams / 0.8 - 1e-9)
    assert plan.replicas == d.replicas and not plan.remove
    assert len(plan.drain) == spares and all(streams[p] == 0 for p in plan.drain)
    assert d.message.endswith(f"{spares} of them warm spares")
    assert result.status_patch("2026-01-01T00:00:00Z")["spareReplicas"] == spares
    # Next tick, the spares drained and empty: the fleet keeps them (demand has climbed a
    # stream, so one may serve again), at the deletion cost of an empty serving pod.
    for pod in pods:
        if pod["metadata"]["name"] in plan.drain:
            pod["metadata"]["annotations"] = {names.ANNOTATION_DRAINING: "true"}
    _, again = run_tick(prometheus.url, spec=spec, pods=pods, streams=streams, state=state, now=now + 15)
    kept = again.plan
    assert not kept.remove and len(kept.undrain) <= 2 and kept.replicas == again.decision.replicas
    assert again.decision.replicas - again.decision.serving == pytest.approx(spares, abs=2)
    assert all(kept.costs[p] == 0 for p in plan.drain if p not in kept.undrain)


def test_a_pod_readied_again_does_not_lengthen_the_lead_and_a_lead_change_keeps_the_history(prometheus):
    # w-1 started in 90 s. Later it is drained and taken back: Ready's lastTransitionTime
    # moves two hours on. The lead is still the first start's; when a slower pod joins,
    # the lead grows and the forecaster keeps its history (no refetch of 14 days).
    state, first = run_tick(prometheus.url, pods=[ready_pod("w-1")], now=prometheus.end - 600)
    forecaster, points = state.forecaster, first.history_points
    assert first.lead == 180 and points > 14 * 1440 * 0.9
    readied = ready_pod("w-1", ready_at="2026-01-01T02:00:00Z")
    _, again = run_tick(prometheus.url, pods=[readied], state=state, now=prometheus.end - 300)
    assert again.lead == 180
    slow = {**ready_pod("w-2", ready_at="2026-01-01T00:05:00Z"), "metadata": {"name": "w-2", "uid": "u2",
                                                                             "creationTimestamp": "2026-01-01T00:00:00Z"}}
    _, longer = run_tick(prometheus.url, pods=[readied, slow], state=state, now=prometheus.end)
    assert longer.lead == 300 and longer.forecast.horizon == 300     # p90 of 90 s and 300 s, in ticks, + a tick
    assert state.forecaster is forecaster and longer.history_points < 60
