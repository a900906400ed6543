"""Helpers shared by the chart tests: render the chart with Helm's own Go engine, offline.

Which Helm binding, and why: PyPI `helm-python-sdk` (Helm v4 Go library behind ctypes)
declares Python >= 3.10, so it installs normally on our 3.11, and it offers offline
`Chart.render` (the same engine as `helm template`), `lint` with its messages, and
`validate_schema` against values.schema.json. `helm-sdkpy` was tried first, as the
issue suggested: installed with `--ignore-requires-python` plus `cffi` its `Lint` does
run on 3.11, but it has no template/render call at all (only install/upgrade against a
live cluster) and its lint report loses every error text (Go errors marshal as `{}`),
so a failing test could not say what is wrong. One library that does lint, render and
schema checks beats a forced install plus a second renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml


REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "speechops"
# Kubernetes versions the rendered objects are validated against: the chart's floor
# (Chart.yaml kubeVersion >= 1.27) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", "1.33.0")

# Value sets every rendering test runs with: ids say what they switch on.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": {
        "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                       "podMonitor": {"enabled": True},
                       "prometheusRule": {"enabled": True, "alertLabels": {"team": "speech"}}},
        "networkPolicy": {"enabled": True, "operatorEgressCIDRs": ["10.0.0.1/32"],
                          "streamClients": [{"namespaceSelector": {"matchLabels": {"team": "callcenter"}}}]},
        "operator": {"logFormat": "json", "priorityClassName": "system-cluster-critical",
                     "image": {"digest": "sha256:" + "a" * 64},
                     "imagePullSecrets": [{"name": "regcred"}],
                     "extraEnv": [{"name": "EXTRA", "value": "1"}]},
    },
    "kind-cpu-only": {"workers": {"gpu": False}, "operator": {"replicas": 1, "peering": {"enabled": False}},
                      "priorityClasses": {"create": True}},
    "namespaced": {"operator": {"watchNamespaces": ["speech-a", "speech-b"]},
                   "networkPolicy": {"enabled": True}, "monitoring": {"podMonitor": {"enabled": True}}},
    "bring-your-own-rbac": {"rbac": {"create": False},
                            "serviceAccount": {"create": False, "name": "speechops-sa"},
                            "priorityClasses": {"create": False}, "monitoring": {"dashboards": {"enabled": False}}},
}


def render(values: dict[str, Any] | None = None, namespace: str = "speechops-system") -> dict[str, str]:
    """Template path -> rendered text, exactly as `helm template` would produce it."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values=values or {}, name="speechops", namespace=namespace,
                            is_install=True)


def manifests(values: dict[str, Any] | None = None, namespace: str = "speechops-system") -> list[dict]:
    """Every Kubernetes object the chart renders (templates only; CRDs come from crds/)."""
    docs: list[dict] = []
    for path, text in sorted(render(values, namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc | {"__template__": path})
    return docs


def chart_crds() -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        return [doc for crd in chart.crds for doc in yaml.safe_load_all(_crd_text(crd)) if doc]


def _crd_text(crd: dict) -> str:
    return crd["data"]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]
