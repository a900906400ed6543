"""The chart and the examples on a real kube-apiserver: every value set the chart tests
use renders (Helm's engine) into objects the server admits with `--dry-run=server` and
then stores for real, and every example in examples/ applies as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.chart.chartkit import CHART, REPO, VALUE_SETS, chart_crds, manifests

MONITORING_CRDS = Path(__file__).resolve().parent.parent / "data" / "prometheus-operator"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _clean(doc: dict) -> dict:
    doc = {k: v for k, v in doc.items() if k != "__template__"}
    if not doc["metadata"].get("annotations"):
        doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k != "annotations"}
    return doc


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


@pytest.fixture(scope="module")
def crds(control_plane):
    """The chart's CRDs (what `helm install` creates from crds/) and prometheus-operator's
    monitoring CRDs, as on a cluster running kube-prometheus-stack."""
    monitoring = [d for p in sorted(MONITORING_CRDS.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    control_plane.apply(chart_crds() + monitoring)


@pytest.mark.parametrize("values_id", VALUE_SETS)
def test_chart_applies_with_server_dry_run_then_for_real(control_plane, crds, values_id):
    from kubernetes import client
    release_ns = f"chart-{values_id}"
    values = VALUE_SETS[values_id]
    docs = [_clean(d) for d in manifests(values, namespace=release_ns)]
    namespaces = [release_ns, *values.get("operator", {}).get("watchNamespaces", [])]
    control_plane.apply([_namespace(n) for n in namespaces])
    cluster_scoped = [d for d in docs if "namespace" not in d["metadata"]]
    try:
        dry = control_plane.apply(docs, namespace=release_ns, dry_run=True)
        assert [(d["kind"], d["metadata"]["name"]) for d in dry] == [
            (d["kind"], d["metadata"]["name"]) for d in docs]
        with control_plane.api_client() as api:
            assert not client.AppsV1Api(api).list_namespaced_deployment(release_ns).items, \
                "a dry run stored a Deployment"

        stored = control_plane.apply(docs, namespace=release_ns)
        for doc, got in zip(docs, stored):
            assert got["metadata"]["uid"], doc
            assert got["metadata"].get("labels", {}) == doc["metadata"].get("labels", {}), doc["kind"]
        (deployment,) = [d for d in stored if d["kind"] == "Deployment"]
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == (
            values.get("serviceAccount", {}).get("name") or "speechops")
    finally:
        # The next value set installs the same release name: cluster-scoped objects go.
        control_plane.delete(cluster_scoped)
        control_plane.delete([_namespace(n) for n in namespaces])


def test_chart_ships_the_crds_it_installs():
    names = {d["metadata"]["name"] for d in chart_crds()}
    assert names == {"speechpipelines.speechops.dev", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    assert (CHART / "crds" / "speechpipeline.yaml").resolve() == REPO / "crds" / "speechpipeline.yaml"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_applies_as_written(control_plane, crds, path):
    """`kubectl apply -f examples/X.yaml` on a cluster that has only the CRD: every
    object the file needs (its namespace included) is in the file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    stored = control_plane.apply(docs)
    pipelines = [d for d in stored if d["kind"] == "SpeechPipeline"]
    assert pipelines, f"{path.name} has no SpeechPipeline"
    for doc, got in zip(docs, stored):
        if doc["kind"] == "SpeechPipeline":
            # Nothing pruned: every field the example sets is a field of the CRD.
            assert _subset(doc["spec"], got["spec"]), (doc["spec"], got["spec"])


def _subset(small, big) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(map(_subset, small, big))
    return small == big


def _doc_pipelines() -> list[tuple[str, dict]]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    out = []
    for page in pages:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            for doc in yaml.safe_load_all(block):
                if isinstance(doc, dict) and doc.get("kind") == "SpeechPipeline":
                    out.append((str(page.relative_to(REPO)), doc))
    return out


def test_every_pipeline_in_the_docs_is_admitted(control_plane, crds):
    """A reader who pastes a SpeechPipeline from the README or docs/ gets it admitted."""
    pipelines = _doc_pipelines()
    assert pipelines
    for page, doc in pipelines:
        namespace = doc.get("metadata", {}).get("namespace")
        if namespace:
            control_plane.apply([_namespace(namespace)])
        try:
            control_plane.apply([doc], namespace="default", dry_run=True)
        except Exception as exc:
            raise AssertionError(f"{page}: {doc.get('metadata', {}).get('name')}: {exc}") from None
