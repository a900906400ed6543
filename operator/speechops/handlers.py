"""kopf wiring: which events reconcile which pipeline. Everything else lives in
reconcile.py (what to do) and resources/ (what should exist).

Triggers of a reconcile:
- the pipeline is created, its spec changes, or the operator starts (resume);
- a child (ConfigMap, Deployment, Service, PodDisruptionBudget with our label) changes
  or is deleted: edits by hand are undone within a second, and the worker
  Deployment's readiness flows into the pipeline's status;
- a slow timer, as a safety net for what no watch sees (a deleted PriorityClass).
Reconciles of one pipeline run one at a time; triggers that arrive while one waits are
folded into it (a work queue with de-duplication), so a burst costs one reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Mapping

import aiohttp
import kopf

from speechops_contract import api, logs, names
from speechops import operator_metrics as metrics
from speechops import admin_signing, kube
from speechops.kube import ApiError, KubeClient
from speechops.reconcile import (Decision, classes_used_by, delete_children, failed_status, failure_message,
                                 pipeline_key, reconcile, write_status)

PIPELINES = (api.GROUP, api.VERSION, api.PLURAL)
CHILD_RESOURCES = (("", "v1", "configmaps"), ("apps", "v1", "deployments"), ("", "v1", "services"),
                   ("policy", "v1", "poddisruptionbudgets"))
CHILD_LABELS = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_PIPELINE: kopf.PRESENT}
RESYNC_SECONDS = 300.0
RETRY_DELAY_SECONDS = 10.0

logger = logging.getLogger("speechops.operator")


def plain(value: Any) -> Any:
    """kopf's body views -> plain dicts and lists (safe to keep and to compare)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class RoutineAtDebug(logging.Filter):
    """kopf logs every handler that succeeds ("Handler 'child-deployments' succeeded.",
    "Timer 'scale' succeeded.") at INFO, hundreds of lines an hour beside one decision:
    those go to DEBUG, so INFO is one line per decision. A retry kopf schedules ("failed
    temporarily") is logged at ERROR on every attempt; it is a WARNING here, because the
    failure itself is reported once per distinct error (report_failure: condition, Event,
    log line), and a 409 or an API server restart is routine. Unexpected exceptions and
    permanent failures keep ERROR."""

    ROUTINE = re.compile(r"(?: succeeded\.| is processed: \d+ succeeded; 0 failed\.)$")
    RETRY = re.compile(r" failed temporarily: ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and self.ROUTINE.search(str(record.msg)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if record.levelno == logging.ERROR and self.RETRY.search(str(record.msg)):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


ROUTINE_LOGGERS = ("kopf.objects", "kopf.activities.startup", "kopf.activities.login",
                   "kopf.activities.authentication", "kopf.activities.cleanup")


def quiet_kopf() -> None:
    for name in ROUTINE_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RoutineAtDebug) for f in target.filters):
            target.addFilter(RoutineAtDebug())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own names on our objects; nothing under status that the CRD schema would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{api.GROUP}/cleanup"
    # kopf's own "handler succeeded" events are noise next to our decisions.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    quiet_kopf()
    memo.kube = None
    memo.locks = {}
    memo.pending = {}


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    return await kube.login(memo, **kwargs)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("kube") is not None:
        await memo.kube.close()


@kopf.index(*PIPELINES)
def pipelines(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    """(namespace, name) -> the pipeline as last seen: lets a child's event find its
    owner, and deletion know which PriorityClasses other pipelines still use."""
    return {(namespace, name): plain(body)}


@kopf.index("scheduling.k8s.io", "v1", "priorityclasses")
def priority_classes(name: str, **_: Any) -> dict:
    """Every PriorityClass that exists, ours or not (the chart's are labelled by Helm): one
    that exists is never POSTed again, so a reconcile costs no 409."""
    return {name: True}


@kopf.on.event("scheduling.k8s.io", "v1", "priorityclasses", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def priority_class_changed(event: Mapping[str, Any], name: str, memo: kopf.Memo, pipelines: kopf.Index,
                                 **_: Any) -> None:
    """A PriorityClass deleted by hand: pipelines that use it recreate it."""
    if event.get("type") != "DELETED":
        return
    for store in list(pipelines.values()):
        for parent in store:
            if name in classes_used_by(parent.get("spec")):
                try:
                    await run_reconcile(memo, parent, "priorityclass", known_classes=())
                except kopf.TemporaryError:
                    pass


def report(body: Mapping[str, Any], decision: Decision) -> None:
    kopf.event(body, type="Warning" if decision.warning else "Normal", reason=decision.reason,
               message=decision.message)
    logs.decision(logger, pipeline_key(body), decision.reason, decision.message,
                  level=logging.WARNING if decision.warning else logging.INFO, **decision.numbers)


async def report_failure(kube: KubeClient, body: Mapping[str, Any], exc: Exception) -> None:
    """A failed reconcile shows where users look: Ready=False (ReconcileFailed) with the
    error, a Warning Event and a log line, once per distinct error, not once per retry."""
    message = failure_message(exc)
    patch = failed_status(body, message)
    if not patch:
        return   # the same failure as last time: already reported
    decision = Decision("ReconcileFailed", message, warning=True)
    report(body, decision)
    try:
        await write_status(kube, body, patch)
    except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as status_exc:
        logs.decision(logger, pipeline_key(body), "StatusWriteFailed", f"cannot record the failure: {status_exc}",
                      level=logging.WARNING)


async def run_reconcile(memo: kopf.Memo, body: Mapping[str, Any], trigger: str,
                        known_classes: Any = None) -> None:
    """Reconciles one pipeline, at most one at a time per pipeline; a trigger arriving
    while another waits only refreshes the body the waiting one will use."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return   # being deleted: the delete handler owns it now
    key = pipeline_key(body)
    queued = key in memo.pending
    memo.pending[key] = body
    if queued:
        return
    lock = memo.locks.setdefault(key, asyncio.Lock())
    async with lock:
        body = memo.pending.pop(key)
        started = time.perf_counter()
        try:
            outcome = await reconcile(memo.kube, body, known_classes,
                                      admin_key=admin_signing.process_signer().public_pem)
            await write_status(memo.kube, body, outcome.status_patch)
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            metrics.ERRORS.labels(trigger).inc()
            metrics.RECONCILES.labels(trigger, "error").inc()
            await report_failure(memo.kube, body, exc)
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
        finally:
            metrics.DURATION.labels(trigger).observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(trigger, "ok" if outcome.valid else "invalid").inc()
        for decision in outcome.decisions:
            report(body, decision)
            metrics.WRITES.labels(decision.reason).inc()


@kopf.on.create(*PIPELINES)
async def created(body: kopf.Body, memo: kopf.Memo, priority_classes: kopf.Index, **_: Any) -> None:
    await run_reconcile(memo, plain(body), known_classes=set(priority_classes), trigger="create")


@kopf.on.update(*PIPELINES, field="spec")
async def updated(body: kopf.Body, memo: kopf.Memo, priority_classes: kopf.Index, **_: Any) -> None:
    await run_reconcile(memo, plain(body), known_classes=set(priority_classes), trigger="update")


@kopf.on.resume(*PIPELINES)
async def resumed(body: kopf.Body, memo: kopf.Memo, priority_classes: kopf.Index, **_: Any) -> None:
    await run_reconcile(memo, plain(body), known_classes=set(priority_classes), trigger="resume")


@kopf.timer(*PIPELINES, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, idle=None)
async def resync(body: kopf.Body, memo: kopf.Memo, priority_classes: kopf.Index, **_: Any) -> None:
    await run_reconcile(memo, plain(body), known_classes=set(priority_classes), trigger="resync")


def _child_event(resource: tuple[str, str, str]):
    async def child_changed(body: kopf.Body, memo: kopf.Memo, pipelines: kopf.Index,
                            priority_classes: kopf.Index, **_: Any) -> None:
        pipeline = body.get("metadata", {}).get("labels", {}).get(names.LABEL_PIPELINE)
        for parent in pipelines.get((body.get("metadata", {}).get("namespace"), pipeline), []):
            try:
                await run_reconcile(memo, parent, "child", known_classes=set(priority_classes))
            except kopf.TemporaryError:
                pass   # logged; the next event or the resync timer tries again
    child_changed.__name__ = f"child_{resource[2]}"
    return kopf.on.event(*resource, labels=CHILD_LABELS, id=f"child-{resource[2]}")(child_changed)


for _resource in CHILD_RESOURCES:
    _child_event(_resource)


@kopf.on.delete(*PIPELINES)
async def deleted(body: kopf.Body, memo: kopf.Memo, pipelines: kopf.Index, **_: Any) -> None:
    me = (body["metadata"]["namespace"], body["metadata"]["name"])
    in_use: set[str] = set()
    for key, store in pipelines.items():
        if key != me:
            for other in store:
                in_use |= classes_used_by(other.get("spec"))
    key = pipeline_key(body)
    async with memo.locks.setdefault(key, asyncio.Lock()):
        decisions = await delete_children(memo.kube, plain(body), in_use)
    memo.locks.pop(key, None)
    for decision in decisions:
        logs.decision(logger, key, decision.reason, decision.message)
