"""PriorityClasses: one per latency tier plus the reserve class for placeholder pods.

They are cluster-scoped and shared by every pipeline of a tier, so they carry no owner
reference; the reconciler creates a missing one and keeps it while any pipeline uses it.
"""

from __future__ import annotations

from typing import Any

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops_contract.profiles import PROFILES, RESERVE_PRIORITY_CLASS, RESERVE_PRIORITY_VALUE

COMPONENT = "priority"


def _priority_class(name: str, value: int, preemption: str, description: str) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "speechops",
                names.LABEL_MANAGED_BY: names.MANAGED_BY,
                names.LABEL_COMPONENT: COMPONENT,
            },
        },
        "value": value,
        "preemptionPolicy": preemption,
        "globalDefault": False,
        "description": description,
    }


def tier_class(profile: str) -> dict[str, Any]:
    tier = PROFILES[profile]
    return _priority_class(tier.priority_class, tier.priority_value, tier.preemption_policy,
                           f"speechops {profile} workers")


def reserve_class() -> dict[str, Any]:
    # Negative priority and preemptionPolicy Never: placeholder pods never push anything
    # out, and every real pod may preempt them (cluster-autoscaler over-provisioning).
    return _priority_class(RESERVE_PRIORITY_CLASS, RESERVE_PRIORITY_VALUE, "Never",
                           "speechops placeholder pods that hold warm capacity; preempted by any workload")


def uses_reserve(spec: PipelineSpec) -> bool:
    return spec.reserve.mode != "none"


def classes_for(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The PriorityClasses one pipeline's pods need."""
    needed = [tier_class(spec.profile)]
    if uses_reserve(spec):
        needed.append(reserve_class())
    return needed


def all_classes() -> list[dict[str, Any]]:
    return [tier_class(p) for p in PROFILES] + [reserve_class()]
