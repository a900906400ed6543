"""Alerts, scrape objects and the dashboard query what the code exports.

The PrometheusRule is checked by the real `promtool` (Debian's prometheus package):
`check rules` parses every PromQL expression, and `test rules` replays synthetic series
so each SLO alert must fire for a bad pipeline and stay quiet for a healthy one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chartkit import CHART, REPO, VALUE_SETS, by_kind, manifests
from speechops_contract import api, names
from speechops.resources.worker import worker_deployment

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus) not installed")

ALERTS = {"SpeechopsP99FrameLatencyHigh", "SpeechopsDroppedFrames", "SpeechopsUnservedStreams",
          "SpeechopsScalerFallback", "SpeechopsForecastBandTooNarrow", "SpeechopsErrorBudgetFastBurn",
          "SpeechopsErrorBudgetSlowBurn"}


def _rule_groups(tmp_path: Path) -> Path:
    (rule,) = by_kind(manifests(VALUE_SETS["everything-on"]), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_rule_covers_every_slo():
    (rule,) = by_kind(manifests(VALUE_SETS["everything-on"]), "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == ALERTS
    for r in (r for g in rule["spec"]["groups"] for r in g["rules"]):
        assert r["labels"]["team"] == "speech" and r["annotations"]["summary"]


@needs_promtool
def test_promtool_accepts_the_rules(tmp_path):
    result = _promtool("check", "rules", str(_rule_groups(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr


def _series(metric: str, labels: dict[str, str], values: str) -> dict:
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values}


BAD = {"namespace": "speech", "pipeline": "bad"}
GOOD = {"namespace": "speech", "pipeline": "good"}


def _inputs() -> list[dict]:
    series = []
    # Latency: "bad" lands every partial in (0.1, 0.5] s, "good" in <= 0.1 s.
    for labels, slow in ((BAD, True), (GOOD, False)):
        series += [
            _series(f"{names.M_PARTIAL_LATENCY}_bucket", labels | {"le": "0.1"}, "0+0x30" if slow else "0+50x30"),
            _series(f"{names.M_PARTIAL_LATENCY}_bucket", labels | {"le": "0.5"}, "0+50x30"),
            _series(f"{names.M_PARTIAL_LATENCY}_bucket", labels | {"le": "+Inf"}, "0+50x30"),
            _series(names.M_FRAMES, labels | {"direction": "in"}, "0+3000x30"),
        ]
    series += [
        # "bad" drops 1 % of its frames, "good" none.
        _series(names.M_DROPPED_FRAMES, BAD | {"reason": "backlog_full"}, "0+30x30"),
        _series(names.M_DROPPED_FRAMES, GOOD | {"reason": "backlog_full"}, "0+0x30"),
        # "bad" turns away 0.1 streams/s for capacity; "good" refuses 1 stream/s of a buggy
        # client, which is the client's mistake, not unserved demand.
        _series(names.M_REJECTED_STREAMS, BAD | {"reason": "over_capacity", "kind": "capacity"}, "0+6x30"),
        _series(names.M_REJECTED_STREAMS, GOOD | {"reason": "over_capacity", "kind": "capacity"}, "0+0x30"),
        _series(names.M_REJECTED_STREAMS, GOOD | {"reason": "invalid_json", "kind": "client"}, "0+60x30"),
        # The scaler of "bad" fell back once, ten minutes in.
        _series(names.M_OP_SCALER_FALLBACKS, BAD | {"reason": "PrometheusUnavailable"}, "0x10 1x20"),
        _series(names.M_OP_SCALER_FALLBACKS, GOOD | {"reason": "PrometheusUnavailable"}, "0x30"),
        # The band of "bad" covered 90% of the last day against its tier's 97.7%; "good" 96%.
        _series(names.M_OP_BAND_COVERAGE, BAD, "0.9x30"),
        _series(names.M_OP_BAND_COVERAGE, GOOD, "0.96x30"),
        _series(names.M_OP_BAND_TARGET, BAD, "0.977x30"),
        _series(names.M_OP_BAND_TARGET, GOOD, "0.977x30"),
        # "bad" burns its error budget 20x too fast over every window; "good" burned as
        # fast for the last five minutes only (a blip the hour does not confirm).
        *(_series(names.M_OP_BURN_RATE, BAD | {"window": w}, "20x30") for w in ("5m", "30m", "1h", "6h")),
        _series(names.M_OP_BURN_RATE, GOOD | {"window": "5m"}, "20x30"),
        *(_series(names.M_OP_BURN_RATE, GOOD | {"window": w}, "0.5x30") for w in ("30m", "1h", "6h")),
    ]
    return series


# The summary each alert must carry for "bad" at 20 minutes ($value rendered by Prometheus).
EXPECTED_SUMMARIES = {
    "SpeechopsP99FrameLatencyHigh": ("warning", {}, "p99 partial-result latency of speech/bad is 496ms"),
    "SpeechopsDroppedFrames": ("warning", {}, "speech/bad drops 1% of incoming frames"),
    "SpeechopsUnservedStreams": ("critical", {}, "speech/bad rejects 0.10 streams/s"),
    "SpeechopsScalerFallback": ("warning", {"reason": "PrometheusUnavailable"},
                                "Scaler of speech/bad fell back to reactive scaling (PrometheusUnavailable)"),
    "SpeechopsForecastBandTooNarrow": ("warning", {},
                                       "Forecast band of speech/bad covered only 90% of the last day's demand"),
    "SpeechopsErrorBudgetFastBurn": ("critical", {}, "speech/bad burns its error budget 20x too fast"),
    "SpeechopsErrorBudgetSlowBurn": ("warning", {}, "speech/bad burns its error budget 20.0x too fast"),
}


def _with_labels(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


@needs_promtool
def test_each_alert_fires_for_the_bad_pipeline_only(tmp_path):
    rules = _rule_groups(tmp_path)
    descriptions = {r["alert"]: r["annotations"]["description"]
                    for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    expected = []
    for name, (severity, extra, summary) in EXPECTED_SUMMARIES.items():
        labels = {**BAD, "severity": severity, "team": "speech", **extra}
        expected.append({"alertname": name, "eval_time": "20m", "exp_alerts": [{
            "exp_labels": labels,
            "exp_annotations": {"summary": summary, "description": _with_labels(descriptions[name], labels)}}]})
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": _inputs(), "alert_rule_test": expected}]}
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests))
    result = _promtool("test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


def _worker_pod() -> dict:
    spec = api.parse_spec({})
    return worker_deployment("assistant", "speech", spec)["spec"]["template"]


def test_pod_monitor_selects_worker_pods_and_their_metrics_ports():
    (monitor,) = by_kind(manifests(VALUE_SETS["everything-on"]), "PodMonitor")
    pod = _worker_pod()
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    containers = pod["spec"]["containers"] + pod["spec"]["initContainers"]
    port_names = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert {port_names[p] for p in scraped} == {names.GATEWAY_ADMIN_PORT, names.TRITON_METRICS_PORT}


def test_worker_network_policy_selects_worker_pods():
    policies = [d for d in by_kind(manifests(VALUE_SETS["everything-on"]), "NetworkPolicy")
                if d["metadata"]["name"].endswith("-workers")]
    assert policies
    labels = _worker_pod()["metadata"]["labels"]
    for policy in policies:
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {names.GATEWAY_PORT, names.GATEWAY_ADMIN_PORT, names.TRITON_METRICS_PORT}


def test_service_monitor_selects_the_operator_metrics_service():
    docs = manifests(VALUE_SETS["everything-on"])
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kps"


# --- dashboard ---------------------------------------------------------------

DASHBOARD = CHART / "dashboards" / "speechops.json"
KNOWN_METRICS = {v for k, v in vars(names).items() if k.startswith("M_")}


def test_dashboard_json_is_the_generator_output():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_dashboard.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _queried_metrics(exprs: list[str]) -> set[str]:
    found = set()
    for expr in exprs:
        for token in re.findall(r"\bspeechops_[a-z_]+", expr):
            found.add(re.sub(r"_(bucket|sum|count)$", "", token) if token not in KNOWN_METRICS else token)
    return found


def test_dashboard_and_alerts_query_only_metrics_the_code_names():
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    (rule,) = by_kind(manifests(VALUE_SETS["everything-on"]), "PrometheusRule")
    exprs += [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = _queried_metrics(exprs)
    assert used and used <= KNOWN_METRICS, used - KNOWN_METRICS


def test_dashboard_shows_every_signal_operators_ask_for():
    titles = " ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for signal in ("streams", "forecast", "latency", "jitter", "dropped", "replicas", "placeholders",
                   "capacity", "availability", "api key"):
        assert signal in titles


def test_dashboard_splits_refusals_by_kind():
    # Client mistakes and capacity refusals are different problems for different people.
    (panel,) = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"].startswith("Rejected")]
    assert "kind" in panel["targets"][0]["expr"].split("(rate(")[0]


def test_dashboard_configmap_carries_the_grafana_label_and_the_json():
    (cm,) = [d for d in by_kind(manifests(), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["speechops.json"]) == json.loads(DASHBOARD.read_text())
