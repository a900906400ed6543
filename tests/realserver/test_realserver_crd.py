"""The SpeechPipeline CRD on a real kube-apiserver: it installs (the server checks every
`default:` against the CEL rules), it is Established, its OpenAPI schema serves the
fields (`kubectl explain`), and it defaults an empty spec as the operator expects."""

from __future__ import annotations

import copy
import json
import re
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


# ---- every bad spec the CRD can refuse, refused by the server with the field named ------

def _minimal(schema: dict):
    """A small valid value for a schema node (its default when it has one)."""
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object":
        return {key: _minimal(schema["properties"][key]) for key in schema.get("required", [])}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 0) + (1 if schema.get("exclusiveMinimum") else 0)
    if kind == "boolean":
        return False
    return "a"     # a DNS label, a model name, an image: every string node here takes it


WRONG_TYPE = {"string": 7, "integer": "seven", "number": "seven", "boolean": "yes", "object": "x", "array": "x",
              None: True}     # int-or-string


def _violations(schema: dict) -> list[tuple[str, object]]:
    """(what, value) for every constraint of one node a value can break."""
    out = [("type", WRONG_TYPE[schema.get("type")])]
    if "enum" in schema:
        sample = schema["enum"][0]
        out.append(("enum", max(schema["enum"]) + 1 if isinstance(sample, int) else "no-such-value"))
    if "pattern" in schema:
        bad = next(v for v in ("Not_Valid!", "soon") if not re.search(schema["pattern"], v))
        out.append(("pattern", bad))
    if "minimum" in schema:
        out.append(("minimum", schema["minimum"] - (0 if schema.get("exclusiveMinimum") else 1)))
    if "maximum" in schema:
        out.append(("maximum", schema["maximum"] + (0 if schema.get("exclusiveMaximum") else 1)))
    if schema.get("minLength"):
        out.append(("minLength", ""))
    if "maxLength" in schema:
        out.append(("maxLength", "a" * (schema["maxLength"] + 1)))
    if schema.get("minItems"):
        out.append(("minItems", []))
    if "maxItems" in schema:
        out.append(("maxItems", [_minimal(schema["items"])] * (schema["maxItems"] + 1)))
    if "maxProperties" in schema:
        out.append(("maxProperties", {f"k{i}": "v" for i in range(schema["maxProperties"] + 1)}))
    for key in schema.get("required", []):
        value = _minimal(schema)
        value.pop(key)
        out.append((f"required {key}", value))
    return out


def _put(spec: dict, schema: dict, tokens: list[str], value) -> None:
    """Sets value at tokens (keys, "[]" for a list's first item, "{}" for a map key "k"),
    filling what is missing on the way with minimal valid values."""
    node, here = spec, schema
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        if token == "[]":
            if not node:
                node.append(_minimal(here["items"]))
            if last:
                node[0] = value
            else:
                node, here = node[0], here["items"]
            continue
        key, sub = ("k", here["additionalProperties"]) if token == "{}" else (token, here["properties"][token])
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, copy.deepcopy(_minimal(sub)) or ({} if sub.get("type") == "object" else []))
            here = sub


def _field(tokens: list[str]) -> str:
    out = "spec"
    for token in tokens:
        out += "[0]" if token == "[]" else ".k" if token == "{}" else f".{token}"
    return out


def _bad_specs():
    spec_schema = root_schema()["properties"]["spec"]

    def walk(schema, tokens):
        yield schema, tokens
        for key, sub in schema.get("properties", {}).items():
            yield from walk(sub, tokens + [key])
        if isinstance(schema.get("items"), dict):
            yield from walk(schema["items"], tokens + ["[]"])
        if isinstance(schema.get("additionalProperties"), dict):
            yield from walk(schema["additionalProperties"], tokens + ["{}"])

    for schema, tokens in walk(spec_schema, []):
        if not tokens:
            continue
        for what, value in _violations(schema):
            spec: dict = {}
            _put(spec, spec_schema, tokens, value)
            field = _field(tokens)
            if what.startswith("required "):
                field += "." + what.split()[1]
            yield pytest.param(spec, field, None, id=f"{_field(tokens)}:{what}")
    # CEL rules: each rule of the CRD, broken once (test_every_cel_rule_has_a_case).
    for message, (spec, field) in CEL_BREAKS.items():
        yield pytest.param(spec, field, message, id=f"{field}:cel:{message}")


# rule message -> (a spec breaking it, the field the server names)
CEL_BREAKS = {
    "minReplicas must be <= maxReplicas": ({"capacity": {"minReplicas": 5, "maxReplicas": 2}}, "spec.capacity"),
    "stage names must be unique": ({"stages": [{"name": "a", "model": "m"}, {"name": "a", "model": "m"}]},
                                   "spec.stages"),
    "dependsOn must name other stages of this pipeline": (
        {"stages": [{"name": "a", "model": "m", "dependsOn": ["b"]}]}, "spec.stages"),
    "set one of pvc, image or path, not several": (
        {"stages": [{"name": "asr", "model": "whisper_asr", "whisper": {"pvc": {"claimName": "c"}, "path": "/m"}}]},
        "spec.stages[0].whisper"),
    "set either pvc or image, not both": (
        {"worker": {"modelRepository": {"pvc": {"claimName": "c"}, "image": {"image": "i"}}}},
        "spec.worker.modelRepository"),
}


def test_every_cel_rule_has_a_case():
    rules = []

    def walk(schema):
        rules.extend(r["message"] for r in schema.get("x-kubernetes-validations", []))
        for sub in schema.get("properties", {}).values():
            walk(sub)
        if isinstance(schema.get("items"), dict):
            walk(schema["items"])

    walk(root_schema()["properties"]["spec"])
    assert sorted(rules) == sorted(CEL_BREAKS)


@pytest.mark.parametrize("spec,field,message", list(_bad_specs()))
def test_bad_spec_is_refused_naming_the_field(control_plane, crds, spec, field, message):
    from kubernetes import client
    crd = yaml.safe_load(CRD_PATH.read_text())
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    body = {"apiVersion": f"{group}/{version}", "kind": crd["spec"]["names"]["kind"],
            "metadata": {"name": "bad"}, "spec": spec}
    with control_plane.api_client() as api:
        with pytest.raises(client.ApiException) as err:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                group, version, "default", crd["spec"]["names"]["plural"], body, dry_run="All")
    assert err.value.status == 422, err.value.body
    causes = json.loads(err.value.body)["details"]["causes"]
    named = [c for c in causes if c.get("field") == field]
    assert named, causes
    if message:
        assert any(message in c["message"] for c in named), named
