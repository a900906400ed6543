"""Everything one SpeechPipeline needs, in the order to apply it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speechops_contract.api import PipelineSpec
from speechops.resources.disruption import disruption_budget
from speechops.resources.model_configmap import model_configmap
from speechops.resources.priority import classes_for, uses_reserve
from speechops.resources.reserve import reserve_deployment
from speechops.resources.service import service
from speechops.resources.worker import worker_deployment


@dataclass(frozen=True)
class DesiredState:
    # Shared, cluster-scoped: created if missing, never owned by one pipeline.
    priority_classes: list[dict[str, Any]]
    # Owned by the pipeline, in apply order (the ConfigMap before the pods that mount it).
    children: list[dict[str, Any]]

    def all(self) -> list[dict[str, Any]]:
        return self.priority_classes + self.children


def desired_state(pipeline: str, namespace: str | None, spec: PipelineSpec,
                  admin_key: str | None = None) -> DesiredState:
    """`admin_key`: the operator's public key (PEM) the gateways verify drains with."""
    children = [
        model_configmap(pipeline, namespace, spec, admin_key),
        worker_deployment(pipeline, namespace, spec),
        service(pipeline, namespace, spec),
        disruption_budget(pipeline, namespace, spec),
    ]
    if uses_reserve(spec):
        children.append(reserve_deployment(pipeline, namespace, spec))
    return DesiredState(priority_classes=classes_for(spec), children=children)
