"""Pure builders: table-driven over specs; every manifest validated offline against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail)."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from speechops_contract import api, names
from speechops_contract.profiles import PROFILES, RESERVE_PRIORITY_CLASS
from speechops_contract import model_config
from speechops.resources.desired import desired_state
from speechops.resources.priority import all_classes
from speechops.resources.reserve import worker_pod_requests
from speechops.resources.worker import GPU_RESOURCE, worker_spec_json

K8S_VERSION = "1.31"

SPECS = {
    "defaults": {},
    "realtime-pvc-gpu": {
        "profile": "realtime",
        "worker": {"gpusPerPod": 2, "modelRepository": {"pvc": {"claimName": "models", "subPath": "triton"}},
                   "resources": {"triton": {"requests": {"cpu": "4", "memory": "8Gi"}},
                                 "gateway": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}},
                   "nodeSelector": {"gpu": "l4"}},
        "reserve": {"mode": "fixed", "count": 3},
        "streams": {"drainTimeout": "15m"},
    },
    "interactive-image-repo": {
        "profile": "interactive",
        "worker": {"modelRepository": {"image": {"image": "models:1", "path": "/repo/"}},
                   "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "speech",
                                    "effect": "NoSchedule"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "pool", "operator": "In", "values": ["speech"]}]}]}}}},
        "capacity": {"minReplicas": 3, "maxReplicas": 5},
    },
    "batch-cpu-no-reserve": {
        "profile": "batch",
        "stages": [{"name": "vad", "model": "silero_vad"},
                   {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"],
                    "fallbackModel": "whisper_asr_greedy", "options": {"beam_size": "1"}},
                   {"name": "levels", "model": "audio_stats"},
                   {"name": "custom", "model": "my_custom_model", "optional": True}],
        "worker": {"gpusPerPod": 0},
        "capacity": {"minReplicas": 0},
        "reserve": {"mode": "none"},
    },
    "whisper-from-image": {
        "stages": [{"name": "vad", "model": "silero_vad"},
                   {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"], "fallbackModel": "whisper_asr_greedy",
                    "whisper": {"image": {"image": "registry.example/whisper-large-v3:1"}, "language": "de"}}],
        "worker": {"modelRepository": {"pvc": {"claimName": "models"}}},
    },
}


def build(case: str):
    spec = api.parse_spec(SPECS[case])
    return spec, desired_state("pipe", "speech", spec)


def by_kind(state, kind, name=None):
    found = [m for m in state.all() if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, [m["metadata"]["name"] for m in found]
    return found[0]


def pod_containers(deployment):
    pod = deployment["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


@pytest.mark.parametrize("case", SPECS)
def test_every_manifest_is_valid_kubernetes(case):
    _, state = build(case)
    for manifest in state.all():
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_all_priority_classes_are_valid_kubernetes():
    for manifest in all_classes():
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", SPECS)
def test_children_carry_pipeline_labels_and_namespace(case):
    spec, state = build(case)
    for child in state.children:
        meta = child["metadata"]
        assert meta["namespace"] == "speech"
        assert meta["labels"][names.LABEL_PIPELINE] == "pipe"
        assert meta["labels"][names.LABEL_PROFILE] == spec.profile
        assert meta["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY
    for pc in state.priority_classes:
        assert "namespace" not in pc["metadata"]


@pytest.mark.parametrize("case,expected_class", [
    ("defaults", "speechops-interactive"),
    ("realtime-pvc-gpu", "speechops-realtime"),
    ("batch-cpu-no-reserve", "speechops-batch"),
])
def test_worker_priority_class_follows_profile(case, expected_class):
    _, state = build(case)
    worker = by_kind(state, "Deployment", names.worker_deployment("pipe"))
    assert worker["spec"]["template"]["spec"]["priorityClassName"] == expected_class
    assert expected_class in [pc["metadata"]["name"] for pc in state.priority_classes]


@pytest.mark.parametrize("case,gpus", [("defaults", 1), ("realtime-pvc-gpu", 2), ("batch-cpu-no-reserve", 0)])
def test_triton_gpu_limit_matches_gpus_per_pod(case, gpus):
    _, state = build(case)
    worker = by_kind(state, "Deployment", names.worker_deployment("pipe"))
    triton = next(c for c in pod_containers(worker) if c["name"] == "triton")
    limits = triton.get("resources", {}).get("limits", {})
    assert limits.get(GPU_RESOURCE) == (gpus or None)
    tolerations = worker["spec"]["template"]["spec"].get("tolerations", [])
    assert any(t.get("key") == GPU_RESOURCE for t in tolerations) == (gpus > 0)


@pytest.mark.parametrize("case", SPECS)
def test_triton_serves_the_assembled_repository_with_probes(case):
    _, state = build(case)
    worker = by_kind(state, "Deployment", names.worker_deployment("pipe"))
    triton = next(c for c in pod_containers(worker) if c["name"] == "triton")
    assert "--model-repository=/models" in triton["args"]
    assert {p["containerPort"] for p in triton["ports"]} == {
        names.TRITON_HTTP_PORT, names.TRITON_GRPC_PORT, names.TRITON_METRICS_PORT}
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": names.TRITON_HTTP_PORT}
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300   # room for model load
    # Native sidecar: stops after the gateway has drained.
    assert triton["restartPolicy"] == "Always"


@pytest.mark.parametrize("case", SPECS)
def test_gateway_drains_before_termination(case):
    spec, state = build(case)
    worker = by_kind(state, "Deployment", names.worker_deployment("pipe"))
    pod = worker["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    assert pod["terminationGracePeriodSeconds"] > spec.streams.drain_timeout
    pre_stop = " ".join(gateway["lifecycle"]["preStop"]["exec"]["command"])
    # Through the gateway's own Unix socket (tests/worker/test_admin_auth.py runs it).
    assert names.ADMIN_SOCKET in pre_stop and "'POST', '/drain'" in pre_stop
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env[names.ENV_ADMIN_SOCKET] == names.ADMIN_SOCKET
    assert names.ADMIN_SOCKET.startswith(next(m["mountPath"] for m in gateway["volumeMounts"]
                                              if m["name"] == "gateway-tmp") + "/")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in gateway["ports"]} == {names.GATEWAY_PORT, names.GATEWAY_ADMIN_PORT}


@pytest.mark.parametrize("case", SPECS)
def test_gateway_env_carries_a_spec_that_parses_back(case):
    spec, state = build(case)
    worker = by_kind(state, "Deployment", names.worker_deployment("pipe"))
    gateway = worker["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gateway["env"]}
    assert env[names.ENV_PIPELINE]["value"] == "pipe"
    assert env[names.ENV_PROFILE]["value"] == spec.profile
    assert env[names.ENV_NAMESPACE]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    back = api.parse_spec(json.loads(env[names.ENV_PIPELINE_SPEC]["value"]))
    assert (back.profile, back.stages, back.streams) == (spec.profile, spec.stages, spec.streams)
    assert back.capacity.streams_per_replica == spec.capacity.streams_per_replica


def test_scaling_changes_do_not_touch_the_pod_template():
    base = api.parse_spec({})
    changed = api.parse_spec({"scaling": {"leadTime": "10m", "mode": "reactive"}, "capacity": {"maxReplicas": 50}})
    template = lambda s: desired_state("p", "n", s).children[1]["spec"]["template"]  # noqa: E731
    assert template(base) == template(changed)
    assert worker_spec_json(base) == worker_spec_json(changed)


@pytest.mark.parametrize("case", SPECS)
def test_every_container_is_locked_down(case):
    spec, state = build(case)
    for deployment in (m for m in state.children if m["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod_containers(deployment):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("case,init_names,source", [
    ("defaults", ["copy-models", "assemble-models", "triton"], ("emptyDir", names.WORKER_IMAGE_MODELS_PATH)),
    ("realtime-pvc-gpu", ["assemble-models", "triton"], ("persistentVolumeClaim", None)),
    ("interactive-image-repo", ["copy-models", "assemble-models", "triton"], ("emptyDir", "/repo")),
])
def test_model_repository_source(case, init_names, source):
    spec, state = build(case)
    pod = by_kind(state, "Deployment", names.worker_deployment("pipe"))["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == init_names
    volume = next(v for v in pod["volumes"] if v["name"] == "model-source")
    kind, path = source
    assert kind in volume
    if kind == "persistentVolumeClaim":
        assert volume[kind] == {"claimName": "models", "readOnly": True}
        mounts = [m for c in pod["initContainers"] for m in c["volumeMounts"] if m["name"] == "model-source"]
        assert mounts and all(m["subPath"] == "triton" for m in mounts)
    else:
        copy = pod["initContainers"][0]
        assert copy["command"][:2] == ["cp", "-R"] and copy["command"][2] == f"{path}/."
    configs = next(v for v in pod["volumes"] if v["name"] == "model-configs")
    assert configs["configMap"]["name"] == names.model_configmap("pipe")


def test_the_operators_admin_public_key_goes_to_the_gateways_through_the_configmap():
    spec = api.parse_spec({})
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"
    state = desired_state("pipe", "ns", spec, admin_key=pem)
    configmap = by_kind(state, "ConfigMap", names.model_configmap("pipe"))
    assert configmap["data"][names.ADMIN_PUBLIC_KEY_ITEM] == pem
    pod = by_kind(state, "Deployment", names.worker_deployment("pipe"))["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "admin-key")
    assert volume["configMap"] == {"name": names.model_configmap("pipe"), "optional": True,
                                   "items": [{"key": names.ADMIN_PUBLIC_KEY_ITEM, "path": names.ADMIN_PUBLIC_KEY_ITEM}]}
    gateway = next(c for c in pod["spec"]["containers"] if c["name"] == "gateway")
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "admin-key")
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env[names.ENV_ADMIN_PUBLIC_KEYS] == f"{mount['mountPath']}/{names.ADMIN_PUBLIC_KEY_ITEM}" and mount["readOnly"]
    # A new operator key reaches running pods through the mounted ConfigMap: it rolls nothing.
    other = desired_state("pipe", "ns", spec, admin_key=pem.replace("MCow", "MCox"))
    assert by_kind(other, "Deployment", names.worker_deployment("pipe")) == \
        by_kind(state, "Deployment", names.worker_deployment("pipe"))


@pytest.mark.parametrize("case,models", [
    ("defaults", ["silero_vad", "whisper_asr"]),
    ("batch-cpu-no-reserve", ["audio_stats", "silero_vad", "whisper_asr", "whisper_asr_greedy"]),
])
def test_model_configmap_has_one_rendered_config_per_catalog_model(case, models):
    spec, state = build(case)
    cm = by_kind(state, "ConfigMap")
    assert sorted(cm["data"]) == [f"{m}.pbtxt" for m in models]   # unknown my_custom_model keeps its own
    options = {s.model: dict(s.options) for s in spec.stages}
    for model in models:
        expected = model_config.render(model, idle_timeout_s=spec.streams.idle_timeout,
                                       parameters=options.get(model) or None)
        assert cm["data"][f"{model}.pbtxt"] == expected


def test_model_config_change_rolls_the_workers():
    a = desired_state("p", "n", api.parse_spec({"streams": {"idleTimeout": "30s"}})).children[1]
    b = desired_state("p", "n", api.parse_spec({"streams": {"idleTimeout": "2m"}})).children[1]
    key = "speechops.dev/model-config-hash"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


@pytest.mark.parametrize("case", SPECS)
def test_service_and_budget_select_the_worker_pods(case):
    _, state = build(case)
    pod_labels = by_kind(state, "Deployment", names.worker_deployment("pipe"))["spec"]["template"]["metadata"]["labels"]
    svc = by_kind(state, "Service")
    pdb = by_kind(state, "PodDisruptionBudget")
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    # The client path only: drain/undrain and metrics are reached on the pods, not through the Service.
    assert [p["port"] for p in svc["spec"]["ports"]] == [names.GATEWAY_PORT]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_api_keys_and_certificate_are_mounted_secrets():
    spec = api.parse_spec({"streams": {"auth": {"secretName": "team-keys"}, "tls": {"secretName": "speech-tls"}}})
    assert (spec.streams.auth_secret, spec.streams.tls_secret) == ("team-keys", "speech-tls")
    deployment = by_kind(desired_state("pipe", "ns", spec), "Deployment", names.worker_deployment("pipe"))
    pod = deployment["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env[names.ENV_API_KEYS] == names.API_KEYS_MOUNT and env[names.ENV_TLS_DIR] == names.TLS_MOUNT
    mounts = {m["name"]: m for m in gateway["volumeMounts"]}
    assert mounts["api-keys"]["readOnly"] and mounts["tls"]["readOnly"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "team-keys"
    assert volumes["tls"]["secret"]["secretName"] == "speech-tls"
    assert volumes["tls"]["secret"]["defaultMode"] == 0o440
    # No key material in the environment; without the fields nothing is mounted.
    assert not any("valueFrom" in e and "secretKeyRef" in e["valueFrom"] for e in gateway["env"])
    plain = by_kind(desired_state("pipe", "ns", api.parse_spec({})), "Deployment",
                    names.worker_deployment("pipe"))["spec"]["template"]["spec"]
    assert not {"api-keys", "tls"} & {v["name"] for v in plain["volumes"]}


@pytest.mark.parametrize("streams, field, message", [
    ({"auth": {}}, "spec.streams.auth.secretName", "is required"),
    ({"auth": {"secretName": "Team_Keys"}}, "spec.streams.auth.secretName", "Secret name"),
    ({"tls": "speech-tls"}, "spec.streams.tls", "must be an object"),
    ({"tls": {"secretName": ""}}, "spec.streams.tls.secretName", "non-empty"),
])
def test_bad_secret_references_name_the_field(streams, field, message):
    with pytest.raises(api.SpecError) as info:
        api.parse_spec({"streams": streams})
    assert any(path == field and message in msg for path, msg in info.value.problems), info.value.problems


@pytest.mark.parametrize("case,replicas", [
    ("defaults", 1), ("interactive-image-repo", 3), ("batch-cpu-no-reserve", 0)])
def test_worker_is_created_with_min_replicas(case, replicas):
    _, state = build(case)
    assert by_kind(state, "Deployment", names.worker_deployment("pipe"))["spec"]["replicas"] == replicas


@pytest.mark.parametrize("case,placeholders", [("defaults", 0), ("realtime-pvc-gpu", 3), ("batch-cpu-no-reserve", None)])
def test_reserve_deployment_holds_worker_sized_pause_pods(case, placeholders):
    spec, state = build(case)
    reserves = [m for m in state.children if m["metadata"]["name"] == names.reserve_deployment("pipe")]
    class_names = [pc["metadata"]["name"] for pc in state.priority_classes]
    if placeholders is None:
        assert reserves == [] and RESERVE_PRIORITY_CLASS not in class_names
        return
    (reserve,) = reserves
    assert reserve["spec"]["replicas"] == placeholders
    pod = reserve["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == RESERVE_PRIORITY_CLASS
    assert RESERVE_PRIORITY_CLASS in class_names
    requests = pod["containers"][0]["resources"]["requests"]
    assert {k: requests[k] for k in worker_pod_requests(spec)} == worker_pod_requests(spec)
    worker_pod = by_kind(state, "Deployment", names.worker_deployment("pipe"))["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert pod.get(key) == worker_pod.get(key)


def test_placeholder_requests_sum_the_worker_containers():
    spec = api.parse_spec(SPECS["realtime-pvc-gpu"])
    # triton 4 cpu + gateway 500m; memory: triton 8Gi + gateway limit 1Gi (request defaults to limit)
    assert worker_pod_requests(spec) == {"cpu": "4.5", "memory": str(9 * 2**30), GPU_RESOURCE: "2"}


def test_reserve_class_never_preempts_and_ranks_below_every_tier():
    classes = {pc["metadata"]["name"]: pc for pc in all_classes()}
    reserve = classes[RESERVE_PRIORITY_CLASS]
    assert reserve["preemptionPolicy"] == "Never"
    assert reserve["value"] < 0 < min(PROFILES[p].priority_value for p in PROFILES)
    assert classes["speechops-realtime"]["value"] > classes["speechops-interactive"]["value"] > \
        classes["speechops-batch"]["value"]
