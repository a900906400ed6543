"""The worker Deployment: Triton Inference Server plus the streaming gateway per pod.

Triton runs as a native sidecar (an init container with restartPolicy Always): the
gateway starts only once Triton's startup probe passed (models loaded), and on
shutdown Kubernetes stops the gateway first, so Triton keeps serving while the
gateway drains its open streams.
"""

from __future__ import annotations

import json
import math
from typing import Any

from speechops_contract import model_config, names
from speechops_contract.api import PipelineSpec
from speechops_contract.profiles import profile as get_profile
from speechops.resources.meta import CONTAINER_SECURITY, labels, object_meta, pod_security, selector_labels
from speechops.resources.model_configmap import configs_hash, model_configs

COMPONENT = "worker"
ANNOTATION_MODEL_CONFIG_HASH = "speechops.dev/model-config-hash"
GPU_RESOURCE = "nvidia.com/gpu"

MODELS_DIR = "/models"            # the assembled repository Triton serves
MODEL_SOURCE_DIR = "/model-source"
MODEL_CONFIGS_DIR = "/model-configs"

# Seconds between SIGTERM-to-the-gateway and its deadline beyond drainTimeout: time
# for the preStop hook and endpoint removal.
TERMINATION_MARGIN_S = 30
# Triton loads every model before it answers; allow up to 10 minutes (large models
# pulled from a network volume) before the kubelet restarts it.
STARTUP_PERIOD_S = 10
STARTUP_FAILURES = 60

# Link every model of the source repository into the writable repository, then lay the
# operator's generated configs over each model's config.pbtxt.
ASSEMBLE_SCRIPT = f"""set -eu
for src in {MODEL_SOURCE_DIR}/*/; do
  [ -d "$src" ] || continue
  model=$(basename "$src"); mkdir -p "{MODELS_DIR}/$model"
  for entry in "$src"*; do ln -sfn "$entry" "{MODELS_DIR}/$model/$(basename "$entry")"; done
done
for cfg in {MODEL_CONFIGS_DIR}/*.pbtxt; do
  [ -f "$cfg" ] || continue
  model=$(basename "$cfg" .pbtxt); mkdir -p "{MODELS_DIR}/$model"
  rm -f "{MODELS_DIR}/$model/config.pbtxt"; cp "$cfg" "{MODELS_DIR}/$model/config.pbtxt"
done
"""

# preStop: tell the gateway to stop admitting streams (readiness fails, the pod leaves
# the Service), then give endpoint controllers a moment before SIGTERM arrives. Through
# the gateway's Unix socket in its own /tmp, which only this container reaches: over TCP
# a drain needs the operator's signature (a mesh sidecar makes any caller look local).
DRAIN_SCRIPT = (
    "import http.client, socket, time\n"
    "c = http.client.HTTPConnection('localhost', timeout=5)\n"
    "c.sock = socket.socket(socket.AF_UNIX); c.sock.settimeout(5)\n"
    f"c.sock.connect({names.ADMIN_SOCKET!r})\n"
    "c.request('POST', '/drain'); c.getresponse().read()\n"
    "time.sleep(5)\n"
)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def worker_spec_json(spec: PipelineSpec) -> str:
    """The part of the spec the gateway needs, as camelCase JSON that
    `api.parse_spec` reads back. Scaling and placement stay out, so changing them
    does not roll the workers."""
    doc = {
        "profile": spec.profile,
        "stages": [
            {
                "name": s.name, "model": s.model, "version": s.version, "dependsOn": list(s.depends_on),
                **({"fallbackModel": s.fallback_model} if s.fallback_model else {}),
                "optional": s.optional, "options": dict(s.options),
                **({"whisper": _whisper_json(s.whisper)} if s.whisper else {}),
            }
            for s in spec.stages
        ],
        "capacity": {"streamsPerReplica": spec.capacity.streams_per_replica},
        "streams": {
            "sampleRate": spec.streams.sample_rate,
            "maxDuration": _seconds(spec.streams.max_duration),
            "idleTimeout": _seconds(spec.streams.idle_timeout),
            "contextWindow": _seconds(spec.streams.context_window),
            "drainTimeout": _seconds(spec.streams.drain_timeout),
            "partialInterval": _seconds(spec.streams.partial_interval),
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _whisper_json(whisper) -> dict[str, Any]:
    doc: dict[str, Any] = {"language": whisper.language, "task": whisper.task}
    if whisper.pvc_claim_name:
        doc["pvc"] = {"claimName": whisper.pvc_claim_name,
                      **({"subPath": whisper.pvc_sub_path} if whisper.pvc_sub_path else {})}
    if whisper.image:
        doc["image"] = {"image": whisper.image, "path": whisper.image_path}
    if whisper.path:
        doc["path"] = whisper.path
    return doc


def termination_grace_seconds(spec: PipelineSpec) -> int:
    return math.ceil(spec.streams.drain_timeout) + TERMINATION_MARGIN_S


def _triton_resources(spec: PipelineSpec) -> dict[str, Any]:
    res = {k: dict(v) for k, v in spec.worker.triton_resources.items() if k in ("requests", "limits")}
    if spec.worker.gpus_per_pod > 0:
        # Extended resources: the limit alone also sets the request.
        res.setdefault("limits", {})[GPU_RESOURCE] = spec.worker.gpus_per_pod
    return res


def _http_probe(path: str, port: int | str, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": timeout}


def model_source_mount(spec: PipelineSpec) -> dict[str, Any]:
    """Where the source repository is mounted. Triton mounts it at the same path as the
    assemble container, because the assembled repository links into it."""
    mount = {"name": "model-source", "mountPath": MODEL_SOURCE_DIR, "readOnly": True}
    if spec.worker.model_repository.pvc_sub_path:
        mount["subPath"] = spec.worker.model_repository.pvc_sub_path
    return mount


def triton_container(spec: PipelineSpec) -> dict[str, Any]:
    container = {
        "name": "triton",
        "image": spec.worker.triton_image,
        "restartPolicy": "Always",   # native sidecar, see the module docstring
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={MODELS_DIR}",
            f"--http-port={names.TRITON_HTTP_PORT}",
            f"--grpc-port={names.TRITON_GRPC_PORT}",
            f"--metrics-port={names.TRITON_METRICS_PORT}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            # Let in-flight requests finish when stopped (the gateway is already gone).
            "--exit-timeout-secs=30",
        ],
        # The root filesystem is read-only: caches (Python backend, model code) go to /tmp.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "ports": [
            {"name": "triton-http", "containerPort": names.TRITON_HTTP_PORT, "protocol": "TCP"},
            {"name": "triton-grpc", "containerPort": names.TRITON_GRPC_PORT, "protocol": "TCP"},
            {"name": "triton-metrics", "containerPort": names.TRITON_METRICS_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _http_probe("/v2/health/ready", names.TRITON_HTTP_PORT, STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": _http_probe("/v2/health/ready", names.TRITON_HTTP_PORT, 5, 3),
        "livenessProbe": _http_probe("/v2/health/live", names.TRITON_HTTP_PORT, 10, 3),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "triton-tmp", "mountPath": "/tmp"},
            model_source_mount(spec),
        ],
    }
    resources = _triton_resources(spec)
    if resources:
        container["resources"] = resources
    return container


def gateway_container(pipeline: str, spec: PipelineSpec) -> dict[str, Any]:
    container = {
        "name": "gateway",
        "image": spec.worker.gateway_image,
        "ports": [
            {"name": "stream", "containerPort": names.GATEWAY_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": names.GATEWAY_ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": names.ENV_PIPELINE, "value": pipeline},
            {"name": names.ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": names.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": names.ENV_PROFILE, "value": spec.profile},
            {"name": names.ENV_PIPELINE_SPEC, "value": worker_spec_json(spec)},
            {"name": names.ENV_TRITON_GRPC_URL, "value": f"127.0.0.1:{names.TRITON_GRPC_PORT}"},
            {"name": names.ENV_ADMIN_PUBLIC_KEYS, "value": f"{names.ADMIN_PUBLIC_KEY_MOUNT}/{names.ADMIN_PUBLIC_KEY_ITEM}"},
            {"name": names.ENV_ADMIN_SOCKET, "value": names.ADMIN_SOCKET},
            {"name": "HOME", "value": "/tmp"},
        ],
        "readinessProbe": _http_probe("/readyz", "admin", 2, 2),
        "livenessProbe": _http_probe("/healthz", "admin", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["python3", "-c", DRAIN_SCRIPT]}}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "gateway-tmp", "mountPath": "/tmp"},
                         {"name": "admin-key", "mountPath": names.ADMIN_PUBLIC_KEY_MOUNT, "readOnly": True}],
    }
    # API keys and the certificate as mounted Secrets, never env vars: the kubelet
    # updates the files when the Secret changes and the gateway reloads them.
    if spec.streams.auth_secret:
        container["env"].append({"name": names.ENV_API_KEYS, "value": names.API_KEYS_MOUNT})
        container["volumeMounts"].append({"name": "api-keys", "mountPath": names.API_KEYS_MOUNT, "readOnly": True})
    if spec.streams.tls_secret:
        container["env"].append({"name": names.ENV_TLS_DIR, "value": names.TLS_MOUNT})
        container["volumeMounts"].append({"name": "tls", "mountPath": names.TLS_MOUNT, "readOnly": True})
    resources = {k: dict(v) for k, v in spec.worker.gateway_resources.items() if k in ("requests", "limits")}
    if resources:
        container["resources"] = resources
    return container


def _model_source(spec: PipelineSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The model-source volume and the init containers that fill the repository."""
    repo = spec.worker.model_repository
    init: list[dict[str, Any]] = []
    small = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    if repo.pvc_claim_name:
        volume = {"name": "model-source",
                  "persistentVolumeClaim": {"claimName": repo.pvc_claim_name, "readOnly": True}}
    else:
        image, path = (repo.image, repo.image_path) if repo.image else (spec.worker.gateway_image,
                                                                       names.WORKER_IMAGE_MODELS_PATH)
        volume = {"name": "model-source", "emptyDir": {}}
        init.append({
            "name": "copy-models",
            "image": image,
            "command": ["cp", "-R", f"{path.rstrip('/')}/.", f"{MODEL_SOURCE_DIR}/"],
            "securityContext": CONTAINER_SECURITY,
            "resources": small,
            "volumeMounts": [{"name": "model-source", "mountPath": MODEL_SOURCE_DIR}],
        })
    init.append({
        "name": "assemble-models",
        "image": spec.worker.gateway_image,
        "command": ["/bin/sh", "-c", ASSEMBLE_SCRIPT],
        "securityContext": CONTAINER_SECURITY,
        "resources": small,
        "volumeMounts": [
            model_source_mount(spec),
            {"name": "model-configs", "mountPath": MODEL_CONFIGS_DIR, "readOnly": True},
            {"name": "models", "mountPath": MODELS_DIR},
        ],
    })
    return volume, init


def _topology_spread(pipeline: str) -> list[dict[str, Any]]:
    # Spread, but never refuse to schedule: a pending worker costs more than an uneven one.
    return [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": selector_labels(pipeline, COMPONENT)},
         "matchLabelKeys": ["pod-template-hash"]}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def _tolerations(spec: PipelineSpec) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in spec.worker.tolerations]
    if spec.worker.gpus_per_pod > 0 and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def placement(spec: PipelineSpec) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity: shared with the placeholder pods so they
    hold room on the nodes the workers will land on."""
    out: dict[str, Any] = {}
    if spec.worker.node_selector:
        out["nodeSelector"] = dict(spec.worker.node_selector)
    if tolerations := _tolerations(spec):
        out["tolerations"] = tolerations
    if spec.worker.affinity:
        out["affinity"] = dict(spec.worker.affinity)
    return out


def secret_volumes(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The Secrets the gateway reads (owner and group read only; the pod's fsGroup is the group)."""
    out = []
    if spec.streams.auth_secret:
        out.append({"name": "api-keys", "secret": {"secretName": spec.streams.auth_secret, "defaultMode": 0o440}})
    if spec.streams.tls_secret:
        out.append({"name": "tls", "secret": {"secretName": spec.streams.tls_secret, "defaultMode": 0o440,
                                              "items": [{"key": "tls.crt", "path": "tls.crt"},
                                                        {"key": "tls.key", "path": "tls.key"}]}})
    return out


def whisper_sources(spec: PipelineSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, init containers, Triton volume mounts) for the Whisper models stages take
    from a PVC (mounted read-only) or an image (copied by an init container into an
    emptyDir), each at model_config.whisper_model_dir(stage)."""
    volumes, init, mounts = [], [], []
    small = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    for stage in spec.stages:
        whisper, model_dir = stage.whisper, model_config.whisper_model_dir(stage)
        if whisper is None or not (whisper.pvc_claim_name or whisper.image):
            continue
        volume = f"whisper-{stage.name}"[:63].rstrip("-")
        mount = {"name": volume, "mountPath": model_dir, "readOnly": True}
        if whisper.pvc_claim_name:
            volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": whisper.pvc_claim_name,
                                                                       "readOnly": True}})
            if whisper.pvc_sub_path:
                mount["subPath"] = whisper.pvc_sub_path
        else:
            # Large models (large-v3 is 3 GB in float16): no memory medium, no size limit.
            volumes.append({"name": volume, "emptyDir": {}})
            init.append({
                "name": f"copy-{volume}"[:63].rstrip("-"),
                "image": whisper.image,
                "command": ["cp", "-R", f"{whisper.image_path.rstrip('/')}/.", f"{model_dir}/"],
                "securityContext": CONTAINER_SECURITY,
                "resources": small,
                "volumeMounts": [{"name": volume, "mountPath": model_dir}],
            })
        mounts.append(mount)
    return volumes, init, mounts


def pod_spec(pipeline: str, spec: PipelineSpec) -> dict[str, Any]:
    source_volume, init = _model_source(spec)
    whisper_volumes, whisper_init, whisper_mounts = whisper_sources(spec)
    triton = triton_container(spec)
    triton["volumeMounts"] += whisper_mounts
    return {
        "priorityClassName": get_profile(spec.profile).priority_class,
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        "automountServiceAccountToken": False,   # workers never talk to the API server
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": init + whisper_init + [triton],
        "containers": [gateway_container(pipeline, spec)],
        "volumes": [
            source_volume,
            {"name": "models", "emptyDir": {}},
            {"name": "model-configs", "configMap": {"name": names.model_configmap(pipeline)}},
            # The operator's admin public key from the same ConfigMap (optional: a pod
            # starts before the key is there, and refuses TCP drains until it is).
            {"name": "admin-key", "configMap": {"name": names.model_configmap(pipeline), "optional": True,
                                                "items": [{"key": names.ADMIN_PUBLIC_KEY_ITEM,
                                                           "path": names.ADMIN_PUBLIC_KEY_ITEM}]}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "triton-tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "gateway-tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            *whisper_volumes,
            *secret_volumes(spec),
        ],
        "topologySpreadConstraints": _topology_spread(pipeline),
        **placement(spec),
    }


def initial_replicas(spec: PipelineSpec) -> int:
    # Only used when the Deployment is created; afterwards the scaler owns .spec.replicas.
    return spec.capacity.min_replicas


def worker_deployment(pipeline: str, namespace: str | None, spec: PipelineSpec) -> dict[str, Any]:
    pod_labels = labels(pipeline, spec.profile, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(names.worker_deployment(pipeline), namespace, pipeline, spec.profile, COMPONENT),
        "spec": {
            "replicas": initial_replicas(spec),
            "selector": {"matchLabels": selector_labels(pipeline, COMPONENT)},
            # Never remove a serving pod before its replacement is ready: capacity holds
            # through a rollout, and old pods drain their streams.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        # Model configs are copied at pod start, so a change must roll the pods.
                        ANNOTATION_MODEL_CONFIG_HASH: configs_hash(model_configs(spec)),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(names.GATEWAY_ADMIN_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec(pipeline, spec),
            },
        },
    }
