"""The pipeline's Service: clients stream to it; Prometheus scrapes through it."""

from __future__ import annotations

from typing import Any

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops.resources.meta import object_meta, selector_labels

COMPONENT = "worker"


def service(pipeline: str, namespace: str | None, spec: PipelineSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(names.service(pipeline), namespace, pipeline, spec.profile, COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(pipeline, COMPONENT),
            "ports": [
                {"name": "stream", "port": names.GATEWAY_PORT, "targetPort": "stream", "protocol": "TCP"},
                {"name": "admin", "port": names.GATEWAY_ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"},
                {"name": "triton-metrics", "port": names.TRITON_METRICS_PORT, "targetPort": "triton-metrics",
                 "protocol": "TCP"},
            ],
        },
    }
