"""The README's cluster quickstart, step by step, against a real kube-apiserver with its
controller manager (everything but running pods: there is no kubelet, so this test plays
it — the operator runs as a local process with the command line, environment and
ServiceAccount token of the pod the chart's Deployment makes, and worker pods are marked
Ready through their status subresource)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.chart.chartkit import REPO, chart_crds, manifests
from tests.envtest import free_port, wait_for

README = (REPO / "README.md").read_text()
QUICKSTART = README.split("## Cluster quickstart", 1)[1].split("\n## ", 1)[0]
# A GPU-less worker pod must ask for no GPU (workers.gpu=false).
GPU_RESOURCE = "nvidia.com/gpu"


def _commands() -> list[list[str]]:
    """The quickstart's shell commands, continuation lines joined, comments dropped."""
    block = QUICKSTART.split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line.rstrip("&").strip()))
    return out


def _command(*prefix: str) -> list[str]:
    found = [c for c in _commands() if c[:len(prefix)] == list(prefix)]
    assert found, f"the README's quickstart has no `{' '.join(prefix)}` step"
    return found[0]


def _helm_install() -> tuple[str, str, dict]:
    """(release, namespace, values) of the quickstart's `helm install`."""
    cmd = _command("helm", "install")
    release, chart = cmd[2], cmd[3]
    assert (REPO / chart / "Chart.yaml").exists(), chart
    namespace, values = "default", {}
    args = iter(cmd[4:])
    for arg in args:
        if arg in ("--namespace", "-n"):
            namespace = next(args)
        elif arg == "--set":
            key, value = next(args).split("=", 1)
            node = values
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = yaml.safe_load(value)       # as helm: "false" is a boolean
        elif arg != "--create-namespace":
            raise AssertionError(f"the test does not know helm's {arg}: teach it")
    assert "--create-namespace" in cmd
    return release, namespace, values


def _kubectl_apply_files() -> list[Path]:
    return [REPO / c[c.index("-f") + 1] for c in _commands() if c[:2] == ["kubectl", "apply"]]


class ChartOperatorPod:
    """The operator as the chart's pod would run it: its container args and env, its
    ServiceAccount's token; local ports instead of the pod's."""

    def __init__(self, control_plane, deployment: dict, pod_name: str, log: Path) -> None:
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        namespace = deployment["metadata"]["namespace"]
        kubeconfig = control_plane.service_account_kubeconfig(namespace, spec["serviceAccountName"], create=False)
        args = []
        for arg in container["args"]:
            if arg.startswith("--liveness="):
                self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
                arg = f"--liveness={self.liveness}"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={free_port()}"
            args.append(arg)
        fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
        env = {e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
               for e in container["env"]}
        # Secret volumes as the kubelet mounts them (the admin key), under a local directory.
        for mount, local in self._mount_secrets(control_plane, namespace, spec, container, log.parent).items():
            env = {k: local + v[len(mount):] if v.startswith(mount + "/") else v for k, v in env.items()}
        # The image's entry point is `speechops` (images/operator.Dockerfile): this
        # checkout's, whatever is installed.
        bin_dir = log.parent / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "speechops").write_text(f'#!/bin/sh\nexec {sys.executable} -m speechops.cli "$@"\n')
        (bin_dir / "speechops").chmod(0o755)
        argv = (container.get("command") or ["speechops"]) + args
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, **env, "KUBECONFIG": str(kubeconfig),
                           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @staticmethod
    def _mount_secrets(control_plane, namespace: str, spec: dict, container: dict, root: Path) -> dict[str, str]:
        """mountPath -> local directory holding the Secret's items, read from the API server."""
        import base64

        from kubernetes import client
        core = client.CoreV1Api(control_plane.api_client())
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {}
        for mount in container.get("volumeMounts", []):
            source = volumes[mount["name"]].get("secret")
            if source is None:
                continue
            data = core.read_namespaced_secret(source["secretName"], namespace).data or {}
            local = root / "mounts" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for item in source.get("items") or [{"key": k, "path": k} for k in data]:
                (local / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
            mounts[mount["mountPath"]] = str(local)
        return mounts

    def text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _mark_ready(core, pod) -> None:
    """What a kubelet reports once a pod's containers pass their readiness probes."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": {
        "phase": "Running", "podIP": "10.244.0.10", "startTime": now,
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}})


@pytest.fixture(scope="module", params=[(), ("OwnerReferencesPermissionEnforcement",)],
                ids=["kubernetes-defaults", "owner-references-enforced"])
def quickstart_plane(envtest_assets, request):
    """A plain cluster, and one that admits a child with blockOwnerDeletion only from a
    writer that may update its owner's finalizers (OpenShift's default)."""
    from tests.envtest import ControlPlane
    with ControlPlane(controller_manager=True, admission_plugins=request.param, assets=envtest_assets) as cp:
        yield cp


def test_readme_cluster_quickstart_step_by_step(quickstart_plane, tmp_path):
    control_plane = quickstart_plane
    from kubernetes import client
    api = control_plane.api_client()
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    # 3. helm install ... --namespace speechops-system --create-namespace --set ...:
    #    the chart's CRDs first (helm installs crds/ before the templates), then the
    #    namespace, then the rendered templates.
    release, namespace, values = _helm_install()
    assert release == "speechops"
    control_plane.apply(chart_crds())
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    rendered = [{k: v for k, v in d.items() if k != "__template__"} for d in manifests(values, namespace=namespace)]
    control_plane.apply(rendered, namespace=namespace, dry_run=True)
    control_plane.apply(rendered, namespace=namespace)

    #    kubectl -n speechops-system rollout status deployment/speechops: the Deployment
    #    controller makes the operator's pod (it stays Pending: no kubelet here).
    rollout = _command("kubectl", "-n", namespace, "rollout", "status")
    deployment_name = rollout[-1].split("/", 1)[1]
    deployment = api.sanitize_for_serialization(apps.read_namespaced_deployment(deployment_name, namespace))
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    replicas = deployment["spec"]["replicas"]
    operator_pods = wait_for(lambda: (pods := core.list_namespaced_pod(namespace, label_selector=selector).items)
                             and len(pods) == replicas and pods, 60, f"the operator's {replicas} pods")
    for pod in operator_pods:
        assert pod.spec.service_account_name == deployment["spec"]["template"]["spec"]["serviceAccountName"]
        _mark_ready(core, pod)
    wait_for(lambda: apps.read_namespaced_deployment(deployment_name, namespace).status.ready_replicas
          == replicas, 60, "rollout status: the operator's Deployment ready")

    #    ... and the pods' processes, as the pods would run them (with peering, one acts).
    operators: list[ChartOperatorPod] = []

    def logs() -> str:
        return "\n".join(o.text() for o in operators)

    try:
        for i, pod in enumerate(operator_pods):
            operators.append(ChartOperatorPod(control_plane, deployment, pod.metadata.name,
                                              tmp_path / f"operator-{i}.log"))
        # 4. kubectl apply -f examples/pipeline-kind.yaml; kubectl get sp demo -w until Ready=True.
        (example,) = _kubectl_apply_files()
        docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
        control_plane.apply(docs)
        (pipeline,) = [d for d in docs if d["kind"] == "SpeechPipeline"]
        name = pipeline["metadata"]["name"]
        ns = pipeline["metadata"].get("namespace", "default")
        assert _command("kubectl", "get", "sp", name)
        group, version = pipeline["apiVersion"].split("/")

        def worker_pods():
            return [p for p in core.list_namespaced_pod(ns).items
                    if (p.metadata.labels or {}).get("speechops.dev/pipeline") == name]

        pods = wait_for(worker_pods, 90, "the pipeline's worker pods (operator -> Deployment -> ReplicaSet -> Pod)",
                     logs)
        for pod in pods:
            for c in pod.spec.containers + (pod.spec.init_containers or []):
                limits = (c.resources.limits or {}) if c.resources else {}
                assert GPU_RESOURCE not in limits, f"workers.gpu=false, yet {pod.metadata.name} asks for a GPU"
            _mark_ready(core, pod)

        def ready():
            sp = custom.get_namespaced_custom_object(group, version, ns, "speechpipelines", name)
            conditions = {c["type"]: c for c in sp.get("status", {}).get("conditions", [])}
            return conditions.get("Ready", {}).get("status") == "True" and sp

        sp = wait_for(ready, 90, f"sp {name} Ready=True", logs)
        assert sp["status"]["readyReplicas"] >= 1
        # The quickstart streams without API keys: allowed, and said.
        assert {c["type"]: c for c in sp["status"]["conditions"]}["StreamsAuthenticated"]["reason"] == "NoApiKeys"
        # The workers verify drains with the public half of the chart's admin key Secret.
        from speechops.admin_signing import load
        from speechops_contract import names
        signer = load(str(next((tmp_path / "mounts" / "admin-key").iterdir())))
        models = core.read_namespaced_config_map(names.model_configmap(name), ns)
        assert models.data[names.ADMIN_PUBLIC_KEY_ITEM] == signer.public_pem

        # 5. kubectl port-forward svc/demo 8080:8080: the Service exists, serves 8080 and
        #    selects the worker pods.
        forward = _command("kubectl", "port-forward")
        service_name = forward[2].split("/", 1)[1]
        _, remote = forward[3].split(":")
        service = core.read_namespaced_service(service_name, ns)
        assert int(remote) in {p.port for p in service.spec.ports}
        (port,) = [p for p in service.spec.ports if p.port == int(remote)]
        labels = pods[0].metadata.labels
        assert all(labels.get(k) == v for k, v in service.spec.selector.items())
        assert port.target_port in {x for c in pods[0].spec.containers for p in (c.ports or [])
                                    for x in (p.name, p.container_port)}
        # The chart's ClusterRole was enough: nothing the operators asked was forbidden.
        assert "Forbidden" not in logs() and " 403" not in logs(), logs()
        # Every child the operator made is owned by the pipeline (garbage collection).
        for d in apps.list_namespaced_deployment(ns).items:
            if (d.metadata.labels or {}).get("speechops.dev/pipeline") == name:
                assert [o.kind for o in d.metadata.owner_references] == ["SpeechPipeline"]
    finally:
        for o in operators:
            o.stop()
        api.close()
