"""The SpeechPipeline CRD on a real kube-apiserver: it installs (the server checks every
`default:` against the CEL rules), it is Established, its OpenAPI schema serves the
fields (`kubectl explain`), and it defaults an empty spec as the operator expects."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.crd_schema import CRD_PATH, apply_defaults, root_schema

PEERING_CRD = CRD_PATH.parent.parent / "charts" / "speechops" / "crds" / "kopf-peering.yaml"


@pytest.fixture(scope="module")
def crds(control_plane):
    docs = [d for path in (CRD_PATH, PEERING_CRD) for d in yaml.safe_load_all(path.read_text()) if d]
    control_plane.apply(docs)
    return {d["metadata"]["name"]: d for d in docs}


def test_every_crd_installs_and_is_established(control_plane, crds):
    for name in crds:
        crd = control_plane.wait_established(name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions == {"NamesAccepted": "True", "Established": "True"} | {
            k: v for k, v in conditions.items() if k not in ("NamesAccepted", "Established")}
        assert conditions.get("NonStructuralSchema") is None, crd["status"]


def test_openapi_serves_the_fields_kubectl_explain_shows(control_plane, crds):
    crd = yaml.safe_load(CRD_PATH.read_text())
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    # The server publishes a new CRD's OpenAPI a moment after it is Established.
    deadline = time.monotonic() + 60
    while f"apis/{group}/{version}" not in control_plane.get_json("/openapi/v3")["paths"]:
        assert time.monotonic() < deadline, "the CRD's OpenAPI v3 was never published"
        time.sleep(0.2)
    doc = control_plane.get_json(f"/openapi/v3/apis/{group}/{version}")
    schemas = doc["components"]["schemas"]
    kind = crd["spec"]["names"]["kind"]
    served = next(s for name, s in schemas.items() if name.endswith(f".{version}.{kind}"))
    spec_ref = served["properties"]["spec"]
    spec = schemas[spec_ref["allOf"][0]["$ref"].split("/")[-1]] if "allOf" in spec_ref else spec_ref
    ours = root_schema(crd)["properties"]["spec"]
    assert set(spec["properties"]) == set(ours["properties"])
    for field, schema in ours["properties"].items():
        assert spec["properties"][field].get("description") == schema["description"], field


def test_an_empty_pipeline_gets_every_default(control_plane, crds):
    """What the server stores for `spec: {}` is what the CRD's defaults say (tests/crd_schema
    fills them the same way for the KMock tier)."""
    from kubernetes import client
    crd = yaml.safe_load(CRD_PATH.read_text())
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    plural = crd["spec"]["names"]["plural"]
    body = {"apiVersion": f"{group}/{version}", "kind": crd["spec"]["names"]["kind"],
            "metadata": {"name": "defaults"}, "spec": {}}
    with control_plane.api_client() as api:
        stored = client.CustomObjectsApi(api).create_namespaced_custom_object(
            group, version, "default", plural, body, dry_run="All")
    assert stored["spec"] == apply_defaults({}, root_schema(crd)["properties"]["spec"])
