"""The placeholder Deployment: pause pods at the reserve PriorityClass, sized like one
worker pod and placed like one, so they keep GPU nodes warm. A real worker preempts a
placeholder and lands at once; the cluster autoscaler then adds a node for the evicted
placeholder, in the background (the cluster-autoscaler over-provisioning pattern)."""

from __future__ import annotations

from typing import Any

from kubernetes.utils.quantity import parse_quantity

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops_contract.profiles import RESERVE_PRIORITY_CLASS
from speechops.resources.meta import CONTAINER_SECURITY, labels, object_meta, pod_security, selector_labels
from speechops.resources.worker import GPU_RESOURCE, placement

COMPONENT = "reserve"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PAUSE_USER = 65535   # the pause image's own non-root user


def _format_quantity(value) -> str:
    # A Decimal from parse_quantity -> plain decimal text, which Kubernetes accepts.
    return format(value.normalize(), "f")


def worker_pod_requests(spec: PipelineSpec) -> dict[str, str]:
    """What one worker pod requests, summed over its containers: what a placeholder holds."""
    totals: dict[str, Any] = {}
    for res in (spec.worker.triton_resources, spec.worker.gateway_resources):
        # A container's request defaults to its limit when only the limit is set.
        merged = {**dict(res.get("limits", {})), **dict(res.get("requests", {}))}
        for name, qty in merged.items():
            totals[name] = totals.get(name, 0) + parse_quantity(qty)
    if spec.worker.gpus_per_pod > 0:
        totals[GPU_RESOURCE] = spec.worker.gpus_per_pod
    return {name: _format_quantity(parse_quantity(v)) for name, v in sorted(totals.items())}


def initial_placeholders(spec: PipelineSpec) -> int:
    # Created with the fixed count; in auto mode the scaler sizes it from the forecast.
    return spec.reserve.count if spec.reserve.mode == "fixed" else 0


def reserve_deployment(pipeline: str, namespace: str | None, spec: PipelineSpec) -> dict[str, Any]:
    requests = worker_pod_requests(spec)
    container: dict[str, Any] = {
        "name": "placeholder",
        "image": PAUSE_IMAGE,
        "securityContext": CONTAINER_SECURITY,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi", **requests},
                      **({"limits": {GPU_RESOURCE: requests[GPU_RESOURCE]}} if GPU_RESOURCE in requests else {})},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(names.reserve_deployment(pipeline), namespace, pipeline, spec.profile, COMPONENT),
        "spec": {
            "replicas": initial_placeholders(spec),
            "selector": {"matchLabels": selector_labels(pipeline, COMPONENT)},
            "revisionHistoryLimit": 2,
            "template": {
                "metadata": {"labels": labels(pipeline, spec.profile, COMPONENT)},
                "spec": {
                    "priorityClassName": RESERVE_PRIORITY_CLASS,
                    # A preempted placeholder must leave at once.
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(PAUSE_USER),
                    "containers": [container],
                    **placement(spec),
                },
            },
        },
    }
