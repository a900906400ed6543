"""The operator's own Prometheus metrics (served by `speechops run --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from speechops_contract import names

RECONCILES = Counter(names.M_OP_RECONCILES, "Pipeline reconciles, by trigger and result",
                     ["trigger", "result"])
ERRORS = Counter(names.M_OP_ERRORS, "Reconciles that failed, by trigger", ["trigger"])
DURATION = Histogram(names.M_OP_RECONCILE_DURATION, "Time to reconcile one pipeline",
                     ["trigger"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WRITES = Counter(names.M_OP_CHILD_WRITES, "Creates, patches and deletes of children",
                 ["reason"])
