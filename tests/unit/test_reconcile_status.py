"""Pipeline status from the worker Deployment: Ready, Progressing, Degraded."""

from __future__ import annotations

import pytest

from speechops import conditions as c
from speechops.reconcile import invalid_conditions, status_patch, worker_conditions


def deployment(want, have=None, ready=0, updated=None, generation=1, observed=1):
    have = want if have is None else have
    return {"metadata": {"generation": generation},
            "spec": {"replicas": want},
            "status": {"replicas": have, "readyReplicas": ready,
                       "updatedReplicas": want if updated is None else updated, "observedGeneration": observed}}


@pytest.mark.parametrize("worker,ready,progressing,degraded", [
    pytest.param(None, ("False", "WorkersMissing"), ("True", "Creating"), ("False", "WorkersMissing"), id="missing"),
    pytest.param(deployment(3, ready=3), ("True", "WorkersReady"), ("False", "Stable"), ("False", "WorkersReady"),
                 id="all-ready"),
    pytest.param(deployment(3, ready=0), ("False", "NoWorkersReady"), ("False", "Stable"),
                 ("False", "NoWorkersReady"), id="none-ready"),
    pytest.param(deployment(4, ready=1), ("True", "PartiallyReady"), ("False", "Stable"),
                 ("True", "WorkersNotReady"), id="some-ready"),
    pytest.param(deployment(0, ready=0), ("True", "ScaledToZero"), ("False", "Stable"), ("False", "ScaledToZero"),
                 id="scaled-to-zero"),
    pytest.param(deployment(3, have=4, ready=3, updated=1), ("True", "WorkersReady"), ("True", "RollingOut"),
                 ("False", "WorkersReady"), id="rolling-out"),
    pytest.param(deployment(3, ready=3, generation=2, observed=1), ("True", "WorkersReady"), ("True", "RollingOut"),
                 ("False", "WorkersReady"), id="new-generation-not-observed"),
])
def test_worker_conditions(worker, ready, progressing, degraded):
    conds = worker_conditions([], worker, generation=5)
    got = {t: (x["status"], x["reason"]) for t in (c.READY, c.PROGRESSING, c.DEGRADED)
           for x in [c.get_condition(conds, t)]}
    assert got == {c.READY: ready, c.PROGRESSING: progressing, c.DEGRADED: degraded}
    assert all(x["observedGeneration"] == 5 for x in conds)


def test_the_scalers_condition_is_kept():
    theirs = c.set_condition([], c.SCALING_ACTIVE, True, "Forecasting", "ok", 1, now="T0")
    conds = worker_conditions(theirs, deployment(1, ready=1), 1)
    assert c.get_condition(conds, c.SCALING_ACTIVE) == theirs[0]


def test_unchanged_status_is_not_written():
    conds = worker_conditions([], deployment(2, ready=2), 1)
    current = {"conditions": conds, "replicas": 2, "readyReplicas": 2, "observedGeneration": 1, "forecast": {"x": 1}}
    again = worker_conditions(conds, deployment(2, ready=2), 1)
    assert status_patch(current, {"conditions": again, "replicas": 2, "readyReplicas": 2,
                                  "observedGeneration": 1}) == {}


def test_invalid_spec_sets_ready_false_with_the_message():
    conds = invalid_conditions([], "spec.capacity.minReplicas: must be <= maxReplicas (5 > 2)", 3)
    ready = c.get_condition(conds, c.READY)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.capacity.minReplicas")
