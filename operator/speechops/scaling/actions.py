"""What the scaler writes: drain and undrain requests to the pods' gateways, the pods'
draining mark and deletion cost, and the Deployments' replicas. Reads are `signals`.

Writes go through the operator's one Kubernetes client (`speechops.kube`); the gateways'
admin endpoints are plain HTTP on the pod IP, each request signed with the operator's
admin key for that one pod (`speechops.admin_signing`), called from a thread (they answer
within a timeout of a few seconds, and a tick must not stall the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from typing import Any, Mapping

from speechops_contract import logs, names
from speechops.admin_signing import AdminSigner
from speechops.kube import KubeClient
from speechops.scaling.controller import TickResult
from speechops.scaling.signals import admin_url, pod_address

Logger = logging.Logger | logging.LoggerAdapter
log = logging.getLogger("speechops.scaler")


async def apply_plan(kube: KubeClient, result: TickResult, *, namespace: str, name: str, pods: list[dict],
                     logger: Logger, worker_replicas: int | None, signer: AdminSigner) -> None:
    """Drains, undrains and deletion costs go before replicas, so the ReplicaSet picks the
    pods we marked empty and never one that holds streams."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    plan = result.plan
    for pod_name in plan.drain:
        if await asyncio.to_thread(request_drain, by_name[pod_name], signer):
            await mark_draining(kube, namespace, pod_name, True)
            logs.decision(logger, f"{namespace}/{name}", "PodDraining",
                          f"pod {pod_name} told to drain: no new streams; it goes once empty, or waits empty "
                          f"as a warm spare while the forecast still wants it", pod=pod_name)
    for pod_name in plan.undrain:
        if not await undrain(kube, namespace, name, by_name[pod_name], logger,
                             " (serves at once; a new pod would take a start)", signer):
            logs.decision(logger, f"{namespace}/{name}", "PodUndrainFailed",
                          f"pod {pod_name} did not answer POST /undrain: it keeps draining, retried next tick",
                          level=logging.WARNING, pod=pod_name)
    for pod_name, cost in plan.costs.items():
        current = (by_name[pod_name]["metadata"].get("annotations") or {}).get(names.POD_DELETION_COST)
        if current != str(cost):
            await kube.patch("Pod", namespace, pod_name, {"metadata": {"annotations": {names.POD_DELETION_COST: str(cost)}}})

    await set_replicas(kube, namespace, names.worker_deployment(name), plan.replicas, worker_replicas)
    reserve = names.reserve_deployment(name)
    await set_replicas(kube, namespace, reserve, result.decision.reserve, await read_replicas(kube, namespace, reserve))


async def release_drains(kube: KubeClient, result: TickResult, *, namespace: str, name: str, pods: list[dict],
                         logger: Logger, signer: AdminSigner) -> None:
    """A scaler that only recommends takes back the drains it started: a draining pod
    takes no new streams, and nothing would ever remove it now."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    for load in result.pod_loads:
        if load.draining:
            await undrain(kube, namespace, name, by_name[load.name], logger,
                          f": the scaler only recommends now ({result.withheld})", signer)


async def undrain(kube: KubeClient, namespace: str, pipeline: str, pod: dict, logger: Logger, why: str,
                  signer: AdminSigner) -> bool:
    """Tells a draining pod's gateway to serve again and drops its draining mark; False
    when the gateway did not answer (the mark stays, so the next tick tries again)."""
    pod_name = pod["metadata"]["name"]
    if not await asyncio.to_thread(request_undrain, pod, signer):
        return False
    await mark_draining(kube, namespace, pod_name, False)
    logs.decision(logger, f"{namespace}/{pipeline}", "PodUndrained", f"pod {pod_name} taken back into service{why}",
                  pod=pod_name)
    return True


async def mark_draining(kube: KubeClient, namespace: str, pod_name: str, draining: bool) -> None:
    """The pod's draining annotation, which the next tick reads back (None removes it)."""
    await kube.patch("Pod", namespace, pod_name,
                     {"metadata": {"annotations": {names.ANNOTATION_DRAINING: "true" if draining else None}}})


def replicas_of(deployment: dict | None) -> int | None:
    """A Deployment's .spec.replicas, or None when it does not exist (yet)."""
    return None if deployment is None else int((deployment.get("spec") or {}).get("replicas", 1))


async def read_replicas(kube: KubeClient, namespace: str, deployment: str) -> int | None:
    return replicas_of(await kube.get("Deployment", namespace, deployment))


async def set_replicas(kube: KubeClient, namespace: str, deployment: str, replicas: int, current: int | None) -> None:
    """Patches .spec.replicas only when it differs (no write without a difference); a
    Deployment that does not exist yet (current None) is the operator's to create, so skip it."""
    if current is not None and current != replicas:
        await kube.patch("Deployment", namespace, deployment, {"spec": {"replicas": replicas}})


# -- the gateways' admin endpoints -------------------------------------------------------------

def request_drain(pod: Mapping[str, Any], signer: AdminSigner, timeout: float = 2.0) -> bool:
    """POST /drain to one pod's gateway: it stops admitting streams and lets open ones end."""
    return _post_admin(pod, "/drain", signer, timeout)


def request_undrain(pod: Mapping[str, Any], signer: AdminSigner, timeout: float = 2.0) -> bool:
    """POST /undrain to one pod's gateway: it admits streams again (demand came back
    before the pod emptied)."""
    return _post_admin(pod, "/undrain", signer, timeout)


def _post_admin(pod: Mapping[str, Any], path: str, signer: AdminSigner, timeout: float) -> bool:
    ip = pod_address(pod)
    meta = pod.get("metadata") or {}
    if not ip:
        return False
    auth = signer.authorization("POST", path, meta.get("namespace", ""), meta.get("name", ""))
    req = urllib.request.Request(admin_url(ip, path), data=b"", method="POST",
                                 headers={"Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            # The gateway says why (a new operator key not yet in its ConfigMap, clock skew).
            log.warning("pod %s/%s refused %s: %s", meta.get("namespace"), meta.get("name"), path,
                        exc.read(500).decode("utf-8", "replace").strip())
        return False
    except (OSError, urllib.error.URLError, ValueError):
        return False
