"""The operator's own Prometheus metrics (served by `speechops run --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("speechops_operator_reconciles_total", "Pipeline reconciles, by trigger and result",
                     ["trigger", "result"])
ERRORS = Counter("speechops_operator_errors_total", "Reconciles that failed, by trigger", ["trigger"])
DURATION = Histogram("speechops_operator_reconcile_duration_seconds", "Time to reconcile one pipeline",
                     ["trigger"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WRITES = Counter("speechops_operator_child_writes_total", "Creates, patches and deletes of children",
                 ["reason"])
