"""The pipeline's Service: the client path, and only that.

It carries the stream port alone. Metrics (gateway :9400, Triton :8002) are scraped from
the pods by the PodMonitor, and drain/undrain are posted by the operator to each pod's
address, so neither sits behind the address clients are given."""

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
            ],
        },
    }
