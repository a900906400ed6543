"""kopf wiring for the scaler: one timer per SpeechPipeline, thin.

Each tick: list the worker pods, read their live streams, run `controller.tick` (its
Prometheus reads in a thread), then write (`actions`): drain and undrain requests and
deletion costs first (so Kubernetes removes only empty pods), the worker Deployment's
replicas, the reserve Deployment's replicas; then status and the ScalingActive condition,
and one Event + log line when the replicas change.

The operator creates both Deployments with minReplicas and never touches .spec.replicas
again; from then on they are the scaler's. With spec.scaling.dryRun, or while a
HorizontalPodAutoscaler also targets the worker Deployment, the scaler writes only status,
events, logs and metrics: the replicas stay with whoever scales them today.

Kubernetes calls go through the operator's one client (`memo.kube`, `speechops.kube`),
logged in once by the operator's login handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from speechops_contract import api, logs, names
from speechops import admin_signing, conditions
from speechops.kube import KubeClient
from speechops.scaling import actions, controller, metrics, rollout, signals

log = logging.getLogger("speechops.scaler")

INTERVAL = controller.TICK


async def list_worker_pods(kube: KubeClient, namespace: str, pipeline: str) -> list[dict]:
    selector = f"{names.LABEL_PIPELINE}={pipeline},{names.LABEL_COMPONENT}=worker"
    return await kube.list("Pod", namespace, label_selector=selector)


async def read_gateways(pods: list[dict]) -> dict[str, signals.GatewayReading | None]:
    """Each pod's gateway metrics (streams, backlog, request counters), all pods at once."""
    readings = await asyncio.gather(*(asyncio.to_thread(signals.read_gateway, p) for p in pods))
    return {p["metadata"]["name"]: r for p, r in zip(pods, readings)}


async def apply(kube: KubeClient, result: controller.TickResult, *, namespace: str, name: str, pods: list[dict],
                body: Any, patch: Any, status: dict, generation: int | None,
                logger: logging.Logger | logging.LoggerAdapter, worker_replicas: int | None = None) -> None:
    """Writes one tick's result: the plan (unless withheld), then metrics, status and
    condition, and an Event and log line when the tick has news."""
    plan = result.plan
    if not result.withheld:
        await actions.apply_plan(kube, result, namespace=namespace, name=name, pods=pods, logger=logger,
                                 worker_replicas=worker_replicas, signer=admin_signing.process_signer())
    else:
        await actions.release_drains(kube, result, namespace=namespace, name=name, pods=pods, logger=logger,
                                     signer=admin_signing.process_signer())

    metrics.record_tick(namespace, name, result, pods)   # dashboard and fallback alert
    d = result.decision
    wanted = result.status_patch(conditions.now_rfc3339())
    wanted["conditions"] = conditions.set_condition(
        status.get("conditions"), conditions.SCALING_ACTIVE, result.scaling_active,
        result.condition_reason, result.condition_message, generation)
    capacity = result.capacity_condition()
    if capacity is not None:
        old = conditions.get_condition(status.get("conditions"), conditions.CAPACITY_AS_MEASURED)
        wanted["conditions"] = conditions.set_condition(wanted["conditions"], conditions.CAPACITY_AS_MEASURED,
                                                        *capacity, generation)
        if not capacity[0] and (old is None or old.get("status") != "False"):
            kopf.event(body, type="Warning", reason=capacity[1], message=capacity[2][:1000])
    patch.status.update(controller.status_changes(status, wanted))
    # No worker Deployment yet (the operator's to create): no replicas changed.
    announce = result.announce and worker_replicas is not None
    if announce:
        kopf.event(body, type="Normal", reason=d.reason, message=result.message)
    fallback = fallback_change(status.get("conditions"), result)
    if fallback is not None:
        kopf.event(body, type=fallback[0], reason=fallback[1], message=result.condition_message[:1000])
    # One line per decision: a change of replicas, or a fallback that starts or ends (not
    # every tick it lasts).
    if announce or fallback is not None:
        logs.decision(logger, f"{namespace}/{name}", d.reason, result.message, replicas=f"{d.previous}->{d.replicas}",
                      deployment_replicas=plan.replicas, reserve=d.reserve,
                      live_streams=result.live_streams, scaling_active=result.scaling_active,
                      condition=result.condition_reason, **({"withheld": True} if result.withheld else {}))


def fallback_change(before: Any, result: controller.TickResult) -> tuple[str, str] | None:
    """(Event type, reason) when ScalingActive starts or stops being False, or its reason
    changes while False; None while it stays as it was."""
    old = conditions.get_condition(before, conditions.SCALING_ACTIVE)
    was_active = old is None or old.get("status") == "True"
    if result.scaling_active:
        return None if was_active else ("Normal", "ScalingRestored")
    if was_active or old.get("reason") != result.condition_reason:
        # No Prometheus configured is a choice, not a failure.
        return ("Normal" if result.condition_reason == "PrometheusNotConfigured" else "Warning",
                result.condition_reason)
    return None


async def fleet_pods(kube: KubeClient, namespace: str, pipeline: str, pods: list[dict],
                     worker: dict | None) -> list[dict]:
    """The current revision's pods; the ReplicaSets are read only while a rollout mixes two."""
    if worker is None or not rollout.mixed_revisions(pods):
        return pods
    selector = f"{names.LABEL_PIPELINE}={pipeline},{names.LABEL_COMPONENT}=worker"
    return rollout.current_pods(pods, worker, await kube.list("ReplicaSet", namespace, label_selector=selector))


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
def deployment_autoscalers(namespace: str, name: str, spec: dict, **_: Any) -> dict | None:
    """HorizontalPodAutoscalers by the Deployment they scale, {(namespace, deployment): hpa}:
    the timer reads it from memory instead of listing HPAs on every tick."""
    target = spec.get("scaleTargetRef") or {}
    if target.get("kind") == "Deployment" and target.get("name"):
        return {(namespace, target["name"]): name}
    return None


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=INTERVAL, initial_delay=1.0)
async def scale(name: str, namespace: str, spec: dict, status: dict, body: Any, patch: Any, memo: Any,
                logger: logging.Logger, meta: dict, deployment_autoscalers: kopf.Index, **_: Any) -> None:
    try:
        parsed = api.parse_spec(spec)
    except api.SpecError as exc:
        # The reconciler reports spec errors; the scaler only says it is not acting (once:
        # an unchanged condition is no write).
        wanted = conditions.set_condition(
            status.get("conditions"), conditions.SCALING_ACTIVE, False, "InvalidSpec", str(exc)[:500],
            meta.get("generation"))
        if wanted != (status or {}).get("conditions"):
            patch.status["conditions"] = wanted
        return
    kube: KubeClient | None = memo.get("kube")
    if kube is None:
        raise kopf.TemporaryError("no Kubernetes client yet: the operator has not logged in", delay=INTERVAL)
    state = controller.state_for(memo, parsed)
    worker = await kube.get("Deployment", namespace, names.worker_deployment(name))
    worker_replicas = actions.replicas_of(worker)
    pods = await fleet_pods(kube, namespace, name, await list_worker_pods(kube, namespace, name), worker)
    gateways = await read_gateways(pods)
    streams = {pod: None if r is None else r.streams for pod, r in gateways.items()}
    source = (signals.PrometheusSource(parsed.scaling.prometheus_url, timeout=5.0)
              if parsed.scaling.prometheus_url else None)
    rivals = tuple(deployment_autoscalers.get((namespace, names.worker_deployment(name)), ()))
    result = await asyncio.to_thread(controller.tick, state, parsed, namespace, name, time.time(), source, pods,
                                     streams, deployment_replicas=worker_replicas, rival_autoscalers=rivals,
                                     gateways=gateways)
    await apply(kube, result, namespace=namespace, name=name, pods=pods, body=body, patch=patch,
                status=status or {}, generation=meta.get("generation"), logger=logger,
                worker_replicas=worker_replicas)
