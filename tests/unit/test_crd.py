"""The CRD is the one source of truth: its defaults equal api.py's, every field is
documented, the examples validate against it and parse with api.parse_spec."""

from __future__ import annotations

import pytest

from speechops_contract import api
from tests.crd_schema import REPO, apply_defaults, load_crd, load_pipeline, prune, root_schema, validate

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _walk(schema, path="spec"):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_names_match_the_api_module():
    crd = load_crd()
    assert crd["spec"]["group"] == api.GROUP
    assert crd["spec"]["names"]["kind"] == api.KIND
    assert crd["spec"]["names"]["plural"] == api.PLURAL
    assert crd["spec"]["names"]["shortNames"] == ["sp"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == api.VERSION and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Profile", "Ready", "Replicas", "Streams", "Forecast", "Spares", "Objective", "Budget", "Burn-1h", "Age"]


def test_crd_is_a_valid_custom_resource_definition():
    import kubernetes_validate
    kubernetes_validate.validate(load_crd(), "1.31", strict=True)


def test_every_field_has_a_description():
    schema = root_schema()
    missing = [path for path, node in _walk(schema["properties"]["spec"])
               if "description" not in node]
    missing += [path for path, node in _walk(schema["properties"]["status"], "status")
                if "description" not in node]
    assert missing == []


@pytest.mark.parametrize("raw_spec", [
    pytest.param({}, id="empty-spec"),
    pytest.param({"worker": {"modelRepository": {"image": {"image": "models:1"}}}}, id="image-repo-path"),
    pytest.param({"stages": [{"name": "a", "model": "silero_vad"}]}, id="stage-version-and-optional"),
    pytest.param({"capacity": {"maxReplicas": 3}, "streams": {"drainTimeout": "10m"}}, id="partial-sections"),
    pytest.param({"streams": {"auth": {"secretName": "keys"}, "tls": {"secretName": "speech.tls"}}}, id="auth-tls"),
])
def test_crd_defaults_equal_api_defaults(raw_spec):
    defaulted = apply_defaults({"spec": raw_spec}, root_schema())["spec"]
    assert api.parse_spec(defaulted) == api.parse_spec(raw_spec)


def test_empty_spec_defaults_to_the_api_dataclass_defaults():
    defaulted = apply_defaults({"spec": {}}, root_schema())["spec"]
    parsed = api.parse_spec(defaulted)
    assert parsed == api.PipelineSpec(stages=api.DEFAULT_STAGES)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates_against_crd_and_parses(path):
    doc = load_pipeline(path)
    assert validate(doc) == []
    defaulted = apply_defaults(doc, root_schema())
    spec = api.parse_spec(defaulted["spec"])
    assert spec.stages and spec.profile in api.PROFILES


def test_at_least_three_examples_cover_the_three_profiles():
    profiles = {load_pipeline(p)["spec"]["profile"] for p in EXAMPLES}
    assert profiles == {"realtime", "interactive", "batch"}


@pytest.mark.parametrize("spec,field", [
    pytest.param({"profile": "fast"}, "spec.profile", id="bad-enum"),
    pytest.param({"capacity": {"minReplicas": -1}}, "spec.capacity.minReplicas", id="below-minimum"),
    pytest.param({"capacity": {"targetUtilization": 0}}, "spec.capacity.targetUtilization", id="exclusive-minimum"),
    pytest.param({"scaling": {"leadTime": "soon"}}, "spec.scaling.leadTime", id="bad-duration"),
    pytest.param({"stages": [{"name": "Bad_Name", "model": "m"}]}, "spec.stages.0.name", id="bad-stage-name"),
    pytest.param({"stages": [{"name": "a"}]}, "spec.stages.0", id="missing-model"),
    pytest.param({"worker": {"gpusPerPod": 17}}, "spec.worker.gpusPerPod", id="too-many-gpus"),
    pytest.param({"streams": {"auth": {"secretName": "Keys"}}}, "spec.streams.auth.secretName", id="bad-secret-name"),
    pytest.param({"streams": {"tls": {}}}, "spec.streams.tls", id="tls-without-secret"),
])
def test_schema_rejects_bad_fields_and_names_them(spec, field):
    errors = validate({"apiVersion": f"{api.GROUP}/{api.VERSION}", "kind": api.KIND,
                       "metadata": {"name": "x"}, "spec": spec})
    assert errors and all(e.startswith(field) for e in errors), errors


CEL_CASES = [
    pytest.param("capacity", "minReplicas must be <= maxReplicas",
                 {"capacity": {"minReplicas": 5, "maxReplicas": 2}}, "spec.capacity.minReplicas", id="min-above-max"),
    pytest.param("stages", "stage names must be unique",
                 {"stages": [{"name": "a", "model": "m"}, {"name": "a", "model": "m"}]}, "spec.stages[1].name",
                 id="duplicate-stage"),
    pytest.param("stages", "dependsOn must name other stages of this pipeline",
                 {"stages": [{"name": "a", "model": "m", "dependsOn": ["b"]}]}, "spec.stages[0].dependsOn[0]",
                 id="unknown-dependency"),
    pytest.param("modelRepository", "set either pvc or image, not both",
                 {"worker": {"modelRepository": {"pvc": {"claimName": "c"}, "image": {"image": "i"}}}},
                 "spec.worker.modelRepository", id="two-repositories"),
]


@pytest.mark.parametrize("node,message,spec,field", CEL_CASES)
def test_cel_rule_exists_and_api_enforces_the_same(node, message, spec, field):
    crd_rules = [rule["message"] for path, schema in _walk(root_schema()["properties"]["spec"])
                 if path.endswith(node) for rule in schema.get("x-kubernetes-validations", [])]
    assert message in crd_rules
    with pytest.raises(api.SpecError) as err:
        api.parse_spec(spec)
    assert field in [p for p, _ in err.value.problems]


def test_every_status_field_the_operator_writes_survives_pruning():
    """The API server drops status fields its schema does not declare: a field written
    under another name than the CRD's vanishes on a real cluster (the scaler once wrote
    `reserveReplicas` where the CRD says `placeholders`). The KMock harness prunes too."""
    from speechops.reconcile import worker_status
    from speechops.scaling.controller import TickResult
    from speechops.scaling.forecast import Forecast
    from speechops.scaling.policy import Decision, DrainPlan

    status = root_schema()["properties"]["status"]
    reconciled = worker_status({"metadata": {"generation": 3}, "status": {}},
                               {"status": {"replicas": 3, "readyReplicas": 2}})
    forecast = Forecast(at=1180.0, horizon=180.0, expected=60.0, upper=72.0, lower=48.0, model="level", history=86400.0)
    decision = Decision(replicas=9, previous=7, reserve=1, reason="ScaleUp", message="scaling 7→9", forecast=forecast,
                        forecast_need=9, live_need=6, serving=7)
    tick = TickResult(decision=decision, plan=DrainPlan(replicas=9, drain=(), remove=()), lead=180.0,
                      scaling_active=True, condition_reason="Forecasting", condition_message="", live_streams=40.0,
                      forecast=forecast)
    scaled = tick.status_patch("2026-01-01T00:00:00Z")
    assert (scaled["spareReplicas"], scaled["placeholders"]) == (2, 1)
    assert prune(reconciled, status) == reconciled and prune(scaled, status) == scaled
    assert prune({"reserveReplicas": 1, "placeholders": 1}, status) == {"placeholders": 1}   # the check can fail
