"""kopf wiring for the scaler: one timer per SpeechPipeline, thin.

Each tick: list the worker pods, read their live streams, run `controller.tick`, then
write: drain and undrain requests and deletion costs first (so Kubernetes removes only empty pods),
the worker Deployment's replicas, the reserve Deployment's replicas, status and the
ScalingActive condition, and one Event + log line when the replicas change.

The operator creates both Deployments with minReplicas and never touches .spec.replicas
again; from then on they are the scaler's. With spec.scaling.dryRun, or while a
HorizontalPodAutoscaler also targets the worker Deployment, the scaler writes only status,
events, logs and metrics: the replicas stay with whoever scales them today.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import kubernetes

from speechops_contract import api, logs, names
from speechops import conditions
from speechops.scaling import controller, metrics, rollout, signals

log = logging.getLogger("speechops.scaler")

INTERVAL = controller.TICK


def kube() -> kubernetes.client.ApiClient:
    """In-cluster credentials, else the kubeconfig (KUBECONFIG) — the same the operator uses."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=config)
        return kubernetes.client.ApiClient(config)
    # The client library reads KUBECONFIG once at import; read it at call time instead.
    return kubernetes.config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


def list_worker_pods(core: kubernetes.client.CoreV1Api, namespace: str, pipeline: str) -> list[dict]:
    selector = f"{names.LABEL_PIPELINE}={pipeline},{names.LABEL_COMPONENT}=worker"
    raw = core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
    return json.loads(raw.data).get("items", [])


def read_streams(pods: list[dict]) -> dict[str, float | None]:
    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(pods))) as pool:
        counts = list(pool.map(signals.read_pod_streams, pods))
    return {p["metadata"]["name"]: c for p, c in zip(pods, counts)}


def apply(result: controller.TickResult, *, namespace: str, name: str, pods: list[dict],
          api_client: kubernetes.client.ApiClient, body: Any, patch: Any, status: dict, generation: int | None,
          logger: logging.Logger | logging.LoggerAdapter, worker_replicas: int | None = None) -> None:
    """Writes one tick's result: the plan (unless withheld), then metrics, status and
    condition, and an Event and log line when the tick has news."""
    plan = result.plan
    if not result.withheld:
        _apply_plan(result, namespace=namespace, name=name, pods=pods, api_client=api_client, logger=logger,
                    worker_replicas=worker_replicas)
    else:
        _release_drains(result, namespace=namespace, name=name, pods=pods, api_client=api_client, logger=logger)

    metrics.record_tick(namespace, name, result, pods)   # dashboard and fallback alert
    d = result.decision
    wanted = result.status_patch(conditions.now_rfc3339())
    wanted["conditions"] = conditions.set_condition(
        status.get("conditions"), conditions.SCALING_ACTIVE, result.scaling_active,
        result.condition_reason, result.condition_message, generation)
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


def _apply_plan(result: controller.TickResult, *, namespace: str, name: str, pods: list[dict],
                api_client: kubernetes.client.ApiClient, logger: logging.Logger | logging.LoggerAdapter,
                worker_replicas: int | None) -> None:
    """Drains, undrains and deletion costs go before replicas, so the ReplicaSet picks the
    pods we marked empty and never one that holds streams."""
    core = kubernetes.client.CoreV1Api(api_client)
    apps = kubernetes.client.AppsV1Api(api_client)
    by_name = {p["metadata"]["name"]: p for p in pods}
    plan = result.plan
    for pod_name in plan.drain:
        if signals.request_drain(by_name[pod_name]):
            _mark_draining(core, namespace, pod_name, True)
            logs.decision(logger, f"{namespace}/{name}", "PodDraining",
                          f"pod {pod_name} told to drain: no new streams; it goes once empty, or waits empty "
                          f"as a warm spare while the forecast still wants it", pod=pod_name)
    for pod_name in plan.undrain:
        if not _undrain(core, namespace, name, by_name[pod_name], logger,
                        " (serves at once; a new pod would take a start)"):
            logs.decision(logger, f"{namespace}/{name}", "PodUndrainFailed",
                          f"pod {pod_name} did not answer POST /undrain: it keeps draining, retried next tick",
                          level=logging.WARNING, pod=pod_name)
    for pod_name, cost in plan.costs.items():
        current = ((by_name[pod_name]["metadata"].get("annotations") or {}).get(names.POD_DELETION_COST))
        if current != str(cost):
            core.patch_namespaced_pod(pod_name, namespace,
                                      {"metadata": {"annotations": {names.POD_DELETION_COST: str(cost)}}},
                                      _preload_content=False)

    _set_replicas(apps, namespace, names.worker_deployment(name), plan.replicas, worker_replicas)
    _set_replicas(apps, namespace, names.reserve_deployment(name), result.decision.reserve,
                  read_replicas(apps, namespace, names.reserve_deployment(name)))


def _release_drains(result: controller.TickResult, *, namespace: str, name: str, pods: list[dict],
                    api_client: kubernetes.client.ApiClient, logger: logging.Logger | logging.LoggerAdapter) -> None:
    """A scaler that only recommends takes back the drains it started: a draining pod
    takes no new streams, and nothing would ever remove it now."""
    core = kubernetes.client.CoreV1Api(api_client)
    by_name = {p["metadata"]["name"]: p for p in pods}
    for load in result.pod_loads:
        if load.draining:
            _undrain(core, namespace, name, by_name[load.name], logger,
                     f": the scaler only recommends now ({result.withheld})")


def _undrain(core: kubernetes.client.CoreV1Api, namespace: str, pipeline: str, pod: dict,
             logger: logging.Logger | logging.LoggerAdapter, why: str) -> bool:
    """Tells a draining pod's gateway to serve again and drops its draining mark; False
    when the gateway did not answer (the mark stays, so the next tick tries again)."""
    pod_name = pod["metadata"]["name"]
    if not signals.request_undrain(pod):
        return False
    _mark_draining(core, namespace, pod_name, False)
    logs.decision(logger, f"{namespace}/{pipeline}", "PodUndrained", f"pod {pod_name} taken back into service{why}",
                  pod=pod_name)
    return True


def _mark_draining(core: kubernetes.client.CoreV1Api, namespace: str, pod_name: str, draining: bool) -> None:
    """The pod's draining annotation, which the next tick reads back (None removes it)."""
    core.patch_namespaced_pod(pod_name, namespace,
                              {"metadata": {"annotations": {names.ANNOTATION_DRAINING: "true" if draining else None}}},
                              _preload_content=False)


def read_deployment(apps: kubernetes.client.AppsV1Api, namespace: str, deployment: str) -> dict | None:
    try:
        current = apps.read_namespaced_deployment(deployment, namespace, _preload_content=False)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(current.data)


def replicas_of(deployment: dict | None) -> int | None:
    return None if deployment is None else int((deployment.get("spec") or {}).get("replicas", 1))


def read_replicas(apps: kubernetes.client.AppsV1Api, namespace: str, deployment: str) -> int | None:
    """A Deployment's .spec.replicas, or None when it does not exist (yet)."""
    return replicas_of(read_deployment(apps, namespace, deployment))


def fleet_pods(apps: kubernetes.client.AppsV1Api, namespace: str, pipeline: str, pods: list[dict],
               worker: dict | None) -> list[dict]:
    """The current revision's pods; the ReplicaSets are read only while a rollout mixes two."""
    if worker is None or not rollout.mixed_revisions(pods):
        return pods
    selector = f"{names.LABEL_PIPELINE}={pipeline},{names.LABEL_COMPONENT}=worker"
    raw = apps.list_namespaced_replica_set(namespace, label_selector=selector, _preload_content=False)
    return rollout.current_pods(pods, worker, json.loads(raw.data).get("items", []))


def _set_replicas(apps: kubernetes.client.AppsV1Api, namespace: str, deployment: str, replicas: int,
                  current: int | None) -> None:
    """Patches .spec.replicas only when it differs (no write without a difference); a
    Deployment that does not exist yet (current None) is the operator's to create, so skip it."""
    if current is not None and current != replicas:
        apps.patch_namespaced_deployment(deployment, namespace, {"spec": {"replicas": replicas}},
                                        _preload_content=False)


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
def deployment_autoscalers(namespace: str, name: str, spec: dict, **_: Any) -> dict | None:
    """HorizontalPodAutoscalers by the Deployment they scale, {(namespace, deployment): hpa}:
    the timer reads it from memory instead of listing HPAs on every tick."""
    target = spec.get("scaleTargetRef") or {}
    if target.get("kind") == "Deployment" and target.get("name"):
        return {(namespace, target["name"]): name}
    return None


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=INTERVAL, initial_delay=1.0)
def scale(name: str, namespace: str, spec: dict, status: dict, body: Any, patch: Any, memo: Any,
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
    state = controller.state_for(memo, parsed)
    client = memo.get("scaler_api") or kube()
    memo["scaler_api"] = client
    core = kubernetes.client.CoreV1Api(client)
    apps = kubernetes.client.AppsV1Api(client)
    worker = read_deployment(apps, namespace, names.worker_deployment(name))
    worker_replicas = replicas_of(worker)
    pods = fleet_pods(apps, namespace, name, list_worker_pods(core, namespace, name), worker)
    streams = read_streams(pods)
    source = (signals.PrometheusSource(parsed.scaling.prometheus_url, timeout=5.0)
              if parsed.scaling.prometheus_url else None)
    rivals = tuple(deployment_autoscalers.get((namespace, names.worker_deployment(name)), ()))
    result = controller.tick(state, parsed, namespace, name, time.time(), source, pods, streams,
                             deployment_replicas=worker_replicas, rival_autoscalers=rivals)
    apply(result, namespace=namespace, name=name, pods=pods, api_client=client, body=body, patch=patch,
          status=status or {}, generation=meta.get("generation"), logger=logger, worker_replicas=worker_replicas)
