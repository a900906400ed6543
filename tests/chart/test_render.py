"""The chart renders (Helm's engine) into objects that a real API server would accept,
with secure defaults, for every supported combination of values."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest

from speechops_contract import profiles
from speechops import operator_main
from speechops.cluster_defaults import ENV_WORKER_GPUS
from chartkit import KUBE_VERSIONS, VALUE_SETS, by_kind, chart_crds, manifests, render

# Kinds whose schemas are not in Kubernetes itself: the kopf peering object is checked
# against the chart's own CRD; Prometheus Operator objects by test_monitoring.py.
CUSTOM_GROUPS = ("kopf.dev/", "monitoring.coreos.com/")


def _clean(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__template__"}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_id", VALUE_SETS)
def test_every_rendered_object_validates_against_kubernetes_schemas(values_id, kube_version):
    docs = manifests(VALUE_SETS[values_id])
    assert docs, "the chart rendered nothing"
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(_clean(doc), kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['__template__']} {doc['kind']}/{doc['metadata']['name']}: {exc.message} "
                        f"at {'.'.join(map(str, exc.path))}")
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_chart_crds_validate_as_customresourcedefinitions(kube_version):
    crds = chart_crds()
    assert {c["metadata"]["name"] for c in crds} == {
        "speechpipelines.speechops.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    for crd in crds:
        kubernetes_validate.validate(crd, kube_version, strict=True)


@pytest.mark.parametrize("values_id", ["defaults", "namespaced"])
def test_peering_objects_match_the_peering_crds(values_id):
    schemas = {c["spec"]["names"]["kind"]: (c["spec"]["scope"], c["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
               for c in chart_crds() if c["spec"]["group"] == "kopf.dev"}
    peerings = [d for d in manifests(VALUE_SETS[values_id]) if d["apiVersion"] == "kopf.dev/v1"]
    assert peerings
    for doc in peerings:
        scope, schema = schemas[doc["kind"]]
        assert ("namespace" in doc["metadata"]) == (scope == "Namespaced")
        jsonschema.validate(_clean(doc), schema)


def _operator(docs: list[dict]) -> dict:
    (deployment,) = [d for d in by_kind(docs, "Deployment")]
    return deployment


@pytest.mark.parametrize("values_id", VALUE_SETS)
def test_operator_pod_runs_locked_down(values_id):
    pod = _operator(manifests(VALUE_SETS[values_id]))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def _args(values: dict) -> list[str]:
    return _operator(manifests(values))["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_log_format_value_becomes_the_operator_flag(fmt):
    assert f"--log-format={fmt}" in _args({"operator": {"logFormat": fmt}})


def test_default_operator_is_ha_cluster_wide_with_peering():
    docs = manifests()
    deployment = _operator(docs)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["replicas"] == 2
    assert args[0] == "run"
    assert "-A" in args and "--peering=speechops" in args
    assert "--metrics-port=9300" in args and "--liveness=http://0.0.0.0:8080/healthz" in args
    assert [d["metadata"]["name"] for d in by_kind(docs, "ClusterKopfPeering")] == ["speechops"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


def test_watching_namespaces_uses_namespaced_peering_in_each():
    docs = manifests(VALUE_SETS["namespaced"])
    args = _operator(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=speech-a" in args and "--namespace=speech-b" in args
    assert "-A" not in args
    assert not by_kind(docs, "ClusterKopfPeering")
    assert sorted(d["metadata"]["namespace"] for d in by_kind(docs, "KopfPeering")) == ["speech-a", "speech-b"]
    assert sorted(d["metadata"]["namespace"] for d in by_kind(docs, "NetworkPolicy")
                  if d["metadata"]["name"].endswith("-workers")) == ["speech-a", "speech-b"]


def test_single_standalone_replica_has_no_peering_and_no_pdb():
    docs = manifests(VALUE_SETS["kind-cpu-only"])
    assert not any(a.startswith("--peering") for a in _args(VALUE_SETS["kind-cpu-only"]))
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "PodDisruptionBudget")


@pytest.mark.parametrize("gpu, expected", [(True, "true"), (False, "false")], ids=["gpu-workers", "cpu-only-workers"])
def test_worker_gpu_switch_reaches_the_operator(gpu, expected):
    env = _operator(manifests({"workers": {"gpu": gpu}}))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": ENV_WORKER_GPUS, "value": expected} in env


def test_image_digest_wins_over_tag():
    image = _operator(manifests(VALUE_SETS["everything-on"]))["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/speechops/operator@sha256:" + "a" * 64


def test_priority_classes_mirror_the_latency_tiers():
    rendered = {d["metadata"]["name"]: (d["value"], d["preemptionPolicy"])
                for d in by_kind(manifests(), "PriorityClass")}
    expected = {p.priority_class: (p.priority_value, p.preemption_policy) for p in profiles.PROFILES.values()}
    expected[profiles.RESERVE_PRIORITY_CLASS] = (profiles.RESERVE_PRIORITY_VALUE, "Never")
    assert rendered == expected


def test_optional_objects_stay_off_by_default():
    kinds = {d["kind"] for d in manifests()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
            "ConfigMap", "Service"} <= kinds


def test_bring_your_own_rbac_uses_the_named_account():
    docs = manifests(VALUE_SETS["bring-your-own-rbac"])
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ServiceAccount")
    assert _operator(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "speechops-sa"


def test_notes_tell_the_next_command():
    notes = render()["speechops/templates/NOTES.txt"]
    assert "kubectl -n speechops-system rollout status deployment/speechops" in notes
    assert "kubectl apply -f examples/pipeline-kind.yaml" in notes
    assert "speechops stream" in notes


def _run_operator_command(container: dict, tmp_path) -> list[str]:
    """Runs the container's command line with `speechops` replaced by a program that
    prints the arguments it got: what the operator process would receive."""
    import json
    import os
    import subprocess
    import sys
    shim = tmp_path / "speechops"
    shim.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    shim.chmod(0o755)
    argv = container.get("command", ["speechops"]) + container["args"]
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=True)
    return json.loads(out.stdout)


def test_each_peering_replica_draws_its_own_priority(tmp_path):
    container = _operator(manifests())["spec"]["template"]["spec"]["containers"][0]
    runs = [_run_operator_command(container, tmp_path) for _ in range(4)]
    priorities = set()
    for argv in runs:
        assert argv[:-1] == container["args"]
        flag, _, value = argv[-1].partition("=")
        assert flag == "--priority" and 1 <= int(value) <= 1_000_000
        priorities.add(int(value))
    assert len(priorities) > 1


def test_standalone_operator_runs_without_a_shell(tmp_path):
    container = _operator(manifests(VALUE_SETS["kind-cpu-only"]))["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container
    assert _run_operator_command(container, tmp_path) == container["args"]


@pytest.mark.parametrize("values_id", VALUE_SETS)
def test_operator_cli_accepts_the_chart_arguments(values_id, tmp_path):
    container = _operator(manifests(VALUE_SETS[values_id]))["spec"]["template"]["spec"]["containers"][0]
    argv = _run_operator_command(container, tmp_path)
    assert argv[0] == "run"
    args = operator_main.parse_args(argv[1:])
    values = VALUE_SETS[values_id].get("operator", {})
    assert args.log_format == values.get("logFormat", "human")
    assert args.namespace == values.get("watchNamespaces", [])
    assert args.metrics_port == 9300 and args.liveness == "http://0.0.0.0:8080/healthz"
    assert (args.peering is not None) == values.get("peering", {}).get("enabled", True)


def test_peering_identity_is_the_pod_name():
    # kopf names each peer by the POD_ID variable (kopf's peering.detect_own_id).
    import inspect
    from kopf._core.engines import peering
    assert "POD_ID" in inspect.getsource(peering.detect_own_id)
    env = _operator(manifests())["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


def test_the_operator_signs_drains_with_a_key_from_its_own_namespace():
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from speechops_contract import names

    docs = manifests()
    (secret,) = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == "speechops-admin-key"]
    assert secret["metadata"]["namespace"] == "speechops-system"
    # Helm's genPrivateKey: a PEM Ed25519 key the operator loads as it is.
    key = load_pem_private_key(base64.b64decode(secret["data"]["ed25519.pem"]), None)
    assert isinstance(key, Ed25519PrivateKey)
    pod = _operator(docs)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "admin-key")
    assert volume["secret"]["secretName"] == "speechops-admin-key" and volume["secret"]["defaultMode"] == 0o440
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "admin-key")
    assert mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[names.ENV_ADMIN_KEY_FILE] == f"{mount['mountPath']}/ed25519.pem"
    # No Secret access is granted for it: the kubelet mounts it (test_rbac: the role
    # holds exactly what the code calls, and the code reads no Secret).
    rules = [r for d in by_kind(docs, "ClusterRole") for r in d["rules"]]
    assert not any("secrets" in r.get("resources", []) for r in rules)

    # A Secret of one's own (cert-manager, sealed, rendered offline): the chart makes none.
    own = manifests({"operator": {"adminKey": {"existingSecret": "op-key", "secretKey": "tls.key"}}})
    assert not [d for d in by_kind(own, "Secret") if d["metadata"]["name"].endswith("admin-key")]
    pod = _operator(own)["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "admin-key")["secret"]["secretName"] == "op-key"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env[names.ENV_ADMIN_KEY_FILE].endswith("/tls.key")
