"""Labels and metadata every child object carries."""

from __future__ import annotations

from typing import Any

from speechops_contract import names

APP_NAME = "speechops"


def selector_labels(pipeline: str, component: str) -> dict[str, str]:
    """The labels a Deployment selects its pods by. Immutable on a Deployment, so
    nothing that may change (the profile) belongs here."""
    return {names.LABEL_PIPELINE: pipeline, names.LABEL_COMPONENT: component}


def labels(pipeline: str, profile: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": pipeline,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_PROFILE: profile,
        **selector_labels(pipeline, component),
    }


def object_meta(name: str, namespace: str | None, pipeline: str, profile: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels(pipeline, profile, component)
    return meta


# Security context for every container we run: non-root, nothing writable but
# mounted emptyDirs, no capabilities (the Kubernetes "restricted" pod security level).
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_security(user: int = 1000) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
