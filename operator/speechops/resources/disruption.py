"""PodDisruptionBudget: voluntary evictions (node drains, upgrades) take one worker at a
time, so the fleet loses at most one pod's streams' worth of capacity while they drain."""

from __future__ import annotations

from typing import Any

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops.resources.meta import object_meta, selector_labels

COMPONENT = "worker"


def disruption_budget(pipeline: str, namespace: str | None, spec: PipelineSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(names.disruption_budget(pipeline), namespace, pipeline, spec.profile, COMPONENT),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(pipeline, COMPONENT)},
            # A pod that is not ready serves no streams: evicting it costs nothing.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
