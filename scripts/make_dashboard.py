#!/usr/bin/env python3
"""Writes the Grafana dashboard the chart ships (charts/speechops/dashboards/speechops.json).

Metric names come from speechops_contract.names, so the dashboard queries exactly what the
gateway and the operator export. tests/chart/test_dashboard.py checks that the
committed JSON is this script's output.

    PYTHONPATH=contract python scripts/make_dashboard.py            # write
    PYTHONPATH=contract python scripts/make_dashboard.py --check    # exit 1 if stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from speechops_contract import names as n

OUT = Path(__file__).resolve().parent.parent / "charts/speechops/dashboards/speechops.json"
SEL = 'namespace=~"$namespace", pipeline=~"$pipeline"'
BY = "namespace, pipeline"


def target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend, "refId": ref}


def panel(pid: int, title: str, description: str, targets: list[dict], unit: str,
          x: int, y: int, w: int = 12, h: int = 8) -> dict:
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 5}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
    }


def quantile(q: float, metric: str, extra_by: str = "") -> str:
    by = f"{BY}, {extra_by}, le" if extra_by else f"{BY}, le"
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))"


def variable(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "refresh": 2, "includeAll": True,
            "multi": True, "current": {"text": "All", "value": "$__all"}, "allValue": ".*",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "sort": 1}


def build() -> dict:
    panels = [
        panel(1, "Active streams", "Live streams per pipeline (gateway gauge).",
              [target(f"sum by ({BY}) ({n.M_ACTIVE_STREAMS}{{{SEL}}})", "{{namespace}}/{{pipeline}}", "A")],
              "short", 0, 0),
        panel(2, "Forecast vs actual streams",
              "The scaler's forecast of demand at now + lead time, and the top of its band (what the fleet is "
              "sized for), against the streams that came. Actual streams above the band's top are met late.",
              [target(f"sum by ({BY}) ({n.M_OP_FORECAST_STREAMS}{{{SEL}}})", "forecast {{namespace}}/{{pipeline}}", "A"),
               target(f"sum by ({BY}) ({n.M_ACTIVE_STREAMS}{{{SEL}}})", "actual {{namespace}}/{{pipeline}}", "B"),
               target(f"sum by ({BY}) ({n.M_OP_FORECAST_UPPER}{{{SEL}}})", "band top {{namespace}}/{{pipeline}}", "C")],
              "short", 12, 0),
        panel(3, "Partial-result latency p50 / p90 / p99",
              "Audio in to partial result out, per pipeline.",
              [target(quantile(q, n.M_PARTIAL_LATENCY), f"p{int(q * 100)} {{{{pipeline}}}}", "A")
               for q in (0.5, 0.9, 0.99)],
              "s", 0, 8),
        panel(4, "Stage latency p99", "Per stage (VAD, ASR, ...): which stage spends the budget.",
              [target(quantile(0.99, n.M_STAGE_LATENCY, "stage"), "{{pipeline}} {{stage}}", "A")],
              "s", 12, 8),
        panel(5, "Final-result latency p50 / p99", "End of speech to final transcript.",
              [target(quantile(q, n.M_FINAL_LATENCY), f"p{int(q * 100)} {{{{pipeline}}}}", "A")
               for q in (0.5, 0.99)],
              "s", 0, 16),
        panel(6, "Frame jitter p50 / p99", "Deviation of frame inter-arrival times from the frame period.",
              [target(quantile(q, n.M_JITTER), f"p{int(q * 100)} {{{{pipeline}}}}", "A") for q in (0.5, 0.99)],
              "s", 12, 16),
        panel(7, "Dropped frames", "Frames dropped per second, by reason.",
              [target(f"sum by ({BY}, reason) (rate({n.M_DROPPED_FRAMES}{{{SEL}}}[$__rate_interval]))",
                      "{{pipeline}} {{reason}}", "A")],
              "short", 0, 24),
        panel(8, "Rejected streams and backlog",
              "Streams turned away per second, by kind: capacity (callers the fleet could not serve, what the "
              "unserved alert and the error budget count), drain, client (the caller's mistake) and server; "
              "and frames queued in gateways.",
              [target(f"sum by ({BY}, kind, reason) (rate({n.M_REJECTED_STREAMS}{{{SEL}}}[$__rate_interval]))",
                      "rejected {{pipeline}} {{kind}} {{reason}}", "A"),
               target(f"sum by ({BY}) ({n.M_BACKLOG}{{{SEL}}})", "backlog {{pipeline}}", "B")],
              "short", 12, 24),
        panel(9, "Replicas and placeholders",
              "Workers the scaler asked for, workers ready, the desired workers kept drained as warm spares, "
              "and placeholder pods holding warm capacity.",
              [target(f"sum by ({BY}) ({n.M_OP_DESIRED_REPLICAS}{{{SEL}}})", "desired {{pipeline}}", "A"),
               target(f"sum by ({BY}) ({n.M_OP_READY_REPLICAS}{{{SEL}}})", "ready {{pipeline}}", "B"),
               target(f"sum by ({BY}) ({n.M_OP_PLACEHOLDERS}{{{SEL}}})", "placeholders {{pipeline}}", "C"),
               target(f"sum by ({BY}) ({n.M_OP_SPARES}{{{SEL}}})", "warm spares {{pipeline}}", "D")],
              "short", 0, 32),
        panel(10, "Scaler fallbacks and degraded streams",
              "Times the predictive scaler fell back to reactive scaling, and streams served degraded.",
              [target(f"sum by ({BY}, reason) (increase({n.M_OP_SCALER_FALLBACKS}{{{SEL}}}[$__rate_interval]))",
                      "fallback {{pipeline}} {{reason}}", "A"),
               target(f"sum by ({BY}, level) ({n.M_DEGRADED_STREAMS}{{{SEL}}})", "degraded {{pipeline}} {{level}}", "B")],
              "short", 12, 32),
        panel(11, "Forecast band coverage",
              "Of the last day's forecasts, the share whose outcome came at or below the band's top, against "
              "the share the pipeline's tier means it to cover. Well below: demand outgrows the band.",
              [target(f"max by ({BY}) ({n.M_OP_BAND_COVERAGE}{{{SEL}}})", "covered {{pipeline}}", "A"),
               target(f"max by ({BY}) ({n.M_OP_BAND_TARGET}{{{SEL}}})", "target {{pipeline}}", "B")],
              "percentunit", 0, 40),
        panel(12, "Error budget burn rate",
              "The availability objective's error budget: the share of stream requests refused for want of "
              "capacity, over the share the objective allows (1 spends the 30-day budget in 30 days), per "
              "window; the alerts page above 14.4 over 1h and 5m, and ticket above 6 over 6h and 30m. The "
              "scaler widens its band while it burns fast.",
              [target(f"max by ({BY}, window) ({n.M_OP_BURN_RATE}{{{SEL}}})", "{{pipeline}} {{window}}", "A"),
               target(f"max by ({BY}) ({n.M_OP_HEADROOM_SIGMAS}{{{SEL}}})", "band sigmas {{pipeline}}", "B")],
              "short", 12, 40),
        panel(13, "Stream capacity: measured vs open",
              "Streams the ready replicas measured they can hold within their tier's latency target (admission "
              "refuses past it), against the streams open. Open streams at the measured capacity mean refusals; "
              "a measured capacity far under streamsPerReplica x replicas means the hard cap is set too high.",
              [target(f"sum by ({BY}) ({n.M_STREAM_CAPACITY}{{{SEL}}})", "measured capacity {{pipeline}}", "A"),
               target(f"sum by ({BY}) ({n.M_ACTIVE_STREAMS}{{{SEL}}})", "open {{pipeline}}", "B")],
              "short", 0, 48),
        panel(14, "Availability against its objective",
              "Share of stream requests admitted over 30 days, against the pipeline's availability objective, "
              "and the share of the 30-day error budget left.",
              [target(f"max by ({BY}) ({n.M_OP_AVAILABILITY}{{{SEL}}})", "availability {{pipeline}}", "A"),
               target(f"max by ({BY}) ({n.M_OP_AVAILABILITY_OBJECTIVE}{{{SEL}}})", "objective {{pipeline}}", "B"),
               target(f"max by ({BY}) ({n.M_OP_BUDGET_REMAINING}{{{SEL}}})", "budget left {{pipeline}}", "C")],
              "percentunit", 12, 48),
        panel(15, "Connections refused for their API key",
              "Connections refused before any audio for a missing or wrong key, by namespace and reason. A "
              "rise after a key rotation means clients still hold the old key.",
              [target(f'sum by (namespace, reason) (rate({n.M_AUTH_REFUSED}{{namespace=~"$namespace"}}'
                      f'[$__rate_interval]))', "{{namespace}} {{reason}}", "A")],
              "short", 0, 56),
        panel(16, "Drain requests refused",
              "POST /drain and /undrain refused for their operator signature, by reason. unknown_key for a "
              "minute after the operator's key changes is the kubelet catching up; anything else is a caller "
              "that is not the operator.",
              [target(f'sum by (namespace, reason) (rate({n.M_ADMIN_REFUSED}{{namespace=~"$namespace"}}'
                      f'[$__rate_interval]))', "{{namespace}} {{reason}}", "A")],
              "short", 12, 56),
    ]
    return {
        "uid": "speechops-pipelines",
        "title": "speechops pipelines",
        "description": "Streams, forecast vs actual, latency, jitter, drops, replicas and placeholders.",
        "tags": ["speechops"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("namespace", "Namespace", f"label_values({n.M_ACTIVE_STREAMS}, namespace)"),
            variable("pipeline", "Pipeline",
                     f'label_values({n.M_ACTIVE_STREAMS}{{namespace=~"$namespace"}}, pipeline)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if OUT.read_text() != render():
            print(f"{OUT} is stale: run scripts/make_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
