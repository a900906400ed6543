"""Which worker pods are the fleet while a rollout replaces them.

During a rollout the worker pods are two ReplicaSets' pods: the old revision's, which the
Deployment controller removes, and the new one's, up to maxSurge beyond .spec.replicas.
Counting all of them as the fleet and then holding that count raises .spec.replicas by the
surge on every tick (1 -> max within minutes while new pods wait for a node). Like the
HorizontalPodAutoscaler, the scaler takes the fleet's size from the Deployment's
.spec.replicas and plans only the current revision's pods.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"


def template_hash(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(TEMPLATE_HASH)


def live(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def mixed_revisions(pods: Sequence[Mapping[str, Any]]) -> bool:
    """More than one pod template among the live pods: a rollout is under way, and only
    the ReplicaSets can say which template is current."""
    return len({template_hash(p) for p in live(pods)}) > 1


def current_hash(deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]) -> str | None:
    """The pod-template-hash of the Deployment's current ReplicaSet (same revision, owned by it)."""
    meta = deployment.get("metadata") or {}
    revision = (meta.get("annotations") or {}).get(REVISION)
    for rs in replicasets:
        rs_meta = rs.get("metadata") or {}
        owned = any(ref.get("uid") == meta.get("uid") for ref in rs_meta.get("ownerReferences") or [])
        if owned and revision is not None and (rs_meta.get("annotations") or {}).get(REVISION) == revision:
            return template_hash(rs)
    return None


def current_pods(pods: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any] | None,
                 replicasets: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods of the current revision. When that is unknown (no Deployment or no current
    ReplicaSet yet) every pod, since the fleet's size comes from .spec.replicas anyway."""
    if deployment is None:
        return list(pods)
    wanted = current_hash(deployment, replicasets)
    if wanted is None:
        return list(pods)
    return [p for p in pods if template_hash(p) == wanted]
