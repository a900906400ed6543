"""`speechops plan`: manifests like `helm template`, or errors naming the field."""

from __future__ import annotations

import io

import kubernetes_validate
import pytest
import yaml

from speechops import plan
from tests.crd_schema import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def run(tmp_path, text: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    code = plan.main([str(path), *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_plans_to_valid_kubernetes_manifests(tmp_path, example):
    code, out, err = run(tmp_path, example.read_text())
    assert (code, err) == (0, "")
    docs = list(yaml.safe_load_all(out))
    kinds = [d["kind"] for d in docs]
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PriorityClass"} <= set(kinds)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    assert out.count("# Source: ") == len(docs)


def test_several_pipelines_share_priority_classes_and_default_namespace(tmp_path):
    text = "\n---\n".join(
        f"apiVersion: speechops.dev/v1alpha1\nkind: SpeechPipeline\nmetadata: {{name: p{i}}}\nspec: {{}}"
        for i in range(2))
    code, out, _ = run(tmp_path, text, "--namespace", "team-a")
    docs = list(yaml.safe_load_all(out))
    classes = [d["metadata"]["name"] for d in docs if d["kind"] == "PriorityClass"]
    assert sorted(classes) == ["speechops-interactive", "speechops-reserve"]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "PriorityClass"} == {"team-a"}
    assert code == 0


@pytest.mark.parametrize("text,expected", [
    pytest.param("apiVersion: speechops.dev/v1alpha1\nkind: SpeechPipeline\nmetadata: {name: x}\n"
                 "spec: {capacity: {minReplicas: 5, maxReplicas: 2}}",
                 ["SpeechPipeline x: spec.capacity.minReplicas: must be <= maxReplicas (5 > 2)"], id="min-above-max"),
    pytest.param("apiVersion: speechops.dev/v1alpha1\nkind: SpeechPipeline\nmetadata: {name: x}\n"
                 "spec: {profile: fast, scaling: {leadTime: soon}}",
                 ["SpeechPipeline x: spec.profile: must be one of realtime, interactive, batch, got 'fast'",
                  "SpeechPipeline x: spec.scaling.leadTime: expected a duration like '500ms', '30s', '5m', "
                  "'1h30m', '14d', got 'soon'"], id="two-problems"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}",
                 ["document 1: kind/apiVersion must be SpeechPipeline/speechops.dev/v1alpha1, got ConfigMap/v1"],
                 id="wrong-kind"),
    pytest.param("apiVersion: speechops.dev/v1alpha1\nkind: SpeechPipeline\nspec: {}",
                 ["document 1: metadata.name is required"], id="no-name"),
])
def test_invalid_input_prints_errors_with_field_paths_and_nothing_else(tmp_path, text, expected):
    code, out, err = run(tmp_path, text)
    assert code == 1 and out == ""
    assert err.splitlines() == expected


def test_unreadable_file_is_a_clear_error(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert plan.main([str(tmp_path / "missing.yaml")], out=out, err=err) == 1
    assert "cannot read" in err.getvalue()
