"""What users see when things go wrong, as pure functions: a failed reconcile's condition,
the scaler's fallback Events, and kopf's routine lines at DEBUG."""

from __future__ import annotations

import logging

import pytest

from speechops import conditions
from speechops.handlers import RoutineAtDebug
from speechops.kube import ApiError
from speechops.reconcile import failed_status, failure_message
from speechops.scaling.handlers import fallback_change


def test_a_failed_reconcile_sets_ready_false_once_per_error():
    exc = ApiError(403, "POST", "/apis/apps/v1/namespaces/speech/deployments",
                   '{"kind":"Status","message":"deployments.apps is forbidden: cannot set blockOwnerDeletion"}')
    message = failure_message(exc)
    assert message == ("reconcile failed, retrying: POST /apis/apps/v1/namespaces/speech/deployments: HTTP 403: "
                       "deployments.apps is forbidden: cannot set blockOwnerDeletion")
    body = {"metadata": {"generation": 2}, "status": {}}
    patch = failed_status(body, message)
    ready = conditions.get_condition(patch["conditions"], conditions.READY)
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "ReconcileFailed", message)
    # The same failure again: nothing to write, nothing to report.
    assert failed_status({**body, "status": patch}, message) == {}


class Result:
    def __init__(self, active: bool, reason: str):
        self.scaling_active, self.condition_reason = active, reason


def cond(status: str, reason: str) -> list[dict]:
    return [{"type": conditions.SCALING_ACTIVE, "status": status, "reason": reason}]


@pytest.mark.parametrize("before, result, event", [
    (None, Result(False, "PrometheusUnavailable"), ("Warning", "PrometheusUnavailable")),   # falls back
    (cond("False", "PrometheusUnavailable"), Result(False, "PrometheusUnavailable"), None),  # still: quiet
    (cond("False", "PrometheusUnavailable"), Result(False, "PrometheusSlow"), ("Warning", "PrometheusSlow")),
    (cond("False", "PrometheusSlow"), Result(True, "Forecasting"), ("Normal", "ScalingRestored")),
    (cond("True", "Forecasting"), Result(True, "Forecasting"), None),
    (None, Result(False, "PrometheusNotConfigured"), ("Normal", "PrometheusNotConfigured")),
])
def test_the_scaler_reports_a_fallback_when_it_starts_and_ends(before, result, event):
    assert fallback_change(before, result) == event


def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)


def test_kopfs_routine_success_lines_go_to_debug():
    logging.getLogger("kopf.objects").setLevel(logging.INFO)
    try:
        quiet = RoutineAtDebug()
        for msg in ("Handler 'child-deployments' succeeded.", "Timer 'scale' succeeded.",
                    "Creation is processed: 1 succeeded; 0 failed."):
            rec = record(msg)
            assert not quiet.filter(rec) and rec.levelno == logging.DEBUG, msg
        for msg, level in (("Handler 'created' failed with an exception. Will retry.", logging.ERROR),
                           ("Handler 'created' failed permanently: bad spec", logging.ERROR),
                           ("Resuming is processed: 0 succeeded; 1 failed.", logging.INFO)):
            rec = record(msg, level)
            assert quiet.filter(rec) and rec.levelno == level, msg
        # A scheduled retry is a warning: report_failure says the error once, not per attempt.
        rec = record("Handler 'created' failed temporarily: HTTP 409", logging.ERROR)
        assert quiet.filter(rec) and (rec.levelno, rec.levelname) == (logging.WARNING, "WARNING")
        logging.getLogger("kopf.objects").setLevel(logging.DEBUG)
        assert quiet.filter(record("Timer 'scale' succeeded."))     # --verbose shows them
    finally:
        logging.getLogger("kopf.objects").setLevel(logging.NOTSET)


def test_the_reconcilers_conditions_keep_the_scalers():
    from speechops.conditions import RECONCILER_TYPES, merge_types
    live = [{"type": "Ready", "status": "False"}, {"type": "ScalingActive", "status": "False", "reason": "X"}]
    ours = [{"type": "Ready", "status": "True"}, {"type": "Progressing", "status": "False"}]
    assert merge_types(live, ours, RECONCILER_TYPES) == [
        {"type": "Ready", "status": "True"}, {"type": "ScalingActive", "status": "False", "reason": "X"},
        {"type": "Progressing", "status": "False"}]
