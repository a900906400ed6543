"""The operator on a real API server (tests/envtest.py), as a user installs it: the CRD,
the chart's ServiceAccount, ClusterRole and PriorityClasses (labelled by Helm), and
`speechops run` as its own process with the ServiceAccount's token, so RBAC holds it to
what the chart grants. Shared by tests/operator/test_real_*.py and benchmarks/reconcile.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from speechops_contract import api, names
from tests.envtest import wait_for  # noqa: F401  (the tests import it from here too)

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "speechpipeline.yaml"
RELEASE_NAMESPACE = "speechops-system"
SERVICE_ACCOUNT = "speechops"          # the chart's fullname for release "speechops"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}"
INSTALLED_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "Secret")
ADMIN_KEY_FILE = "admin-key.pem"        # beside the kubeconfig: the chart's Secret, as the pod mounts it


def chart_objects(values: dict[str, Any] | None = None) -> list[dict]:
    """What the chart installs that the operator process needs here (no Deployment: the
    operator runs as a local process with the chart's ServiceAccount token)."""
    sys.path.insert(0, str(REPO / "tests" / "chart"))
    from chartkit import manifests
    docs = [{k: v for k, v in d.items() if k != "__template__"}
            for d in manifests(values or {"priorityClasses": {"create": True}}, namespace=RELEASE_NAMESPACE)]
    return [d for d in docs if d["kind"] in INSTALLED_KINDS]


def install(cp) -> Path:
    """CRD + the chart's RBAC, PriorityClasses and admin key Secret; returns the operator's
    kubeconfig, with the admin key written beside it (ADMIN_KEY_FILE), where
    OperatorProcess points the operator as the chart's mount does."""
    cp.apply(list(yaml.safe_load_all(CRD_PATH.read_text())))
    cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}}])
    objects = chart_objects()
    cp.apply(objects)
    kubeconfig = cp.service_account_kubeconfig(RELEASE_NAMESPACE, SERVICE_ACCOUNT, create=False)
    (secret,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-admin-key")]
    key = kubeconfig.with_name(ADMIN_KEY_FILE)
    key.write_bytes(base64.b64decode(next(iter(secret["data"].values()))))
    key.chmod(0o400)
    return kubeconfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`speechops run -A --log-format json` as a child process, its log appended to one
    file across restarts."""

    def __init__(self, kubeconfig: Path, log: Path, extra_env: dict[str, str] | None = None):
        self.kubeconfig, self.log = kubeconfig, log
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.liveness = ""

    def start(self, wait: bool = True) -> "OperatorProcess":
        port = free_port()
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.extra_env}
        if (key := self.kubeconfig.with_name(ADMIN_KEY_FILE)).exists():
            env.setdefault(names.ENV_ADMIN_KEY_FILE, str(key))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "speechops.cli", "run", "-A", "--log-format", "json",
                 "--liveness", self.liveness], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            wait_for(self.alive, timeout=60, what="the operator's liveness endpoint")
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return urllib.request.urlopen(self.liveness, timeout=2).status == 200
        except OSError:
            return False

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc = None

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def pipeline(name: str, namespace: str, spec: dict | None = None) -> dict:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": spec or {}}


class Kube:
    """The few admin reads and writes the tests make, through the official client."""

    def __init__(self, cp):
        from kubernetes import client
        self.client = client
        self.api = cp.api_client()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.policy = client.PolicyV1Api(self.api)

    def namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except self.client.ApiException as exc:
            if exc.status != 409:
                raise

    def create(self, body: dict) -> dict:
        ns = body["metadata"]["namespace"]
        return self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, body)

    def get(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except self.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, namespace: str, name: str, patch: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch)

    def delete(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except self.client.ApiException as exc:
            if exc.status != 404:
                raise

    def pipelines(self, namespace: str) -> list[dict]:
        return self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]

    def children(self, namespace: str) -> dict[tuple[str, str], dict]:
        """(kind, name) -> object, for every object speechops manages in the namespace."""
        selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
        out: dict[tuple[str, str], dict] = {}
        # Raw JSON, as the operator reads it (the client's models rename and drop fields).
        for kind, version, lister in (("ConfigMap", "v1", self.core.list_namespaced_config_map),
                                      ("Deployment", "apps/v1", self.apps.list_namespaced_deployment),
                                      ("Service", "v1", self.core.list_namespaced_service),
                                      ("PodDisruptionBudget", "policy/v1",
                                       self.policy.list_namespaced_pod_disruption_budget)):
            raw = lister(namespace, label_selector=selector, _preload_content=False)
            for item in json.loads(raw.data)["items"]:   # list items come without their kind
                out[(kind, item["metadata"]["name"])] = {"apiVersion": version, "kind": kind, **item}
        return out

    def table(self, path: str) -> dict:
        """What `kubectl get` prints: the server's Table (the CRD's printer columns)."""
        resp = self.api.rest_client.request(
            "GET", self.api.configuration.host + path,
            headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        resp.read()
        return json.loads(resp.data)

    def events(self, namespace: str, name: str) -> list[dict]:
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [self.api.sanitize_for_serialization(e) for e in items]

    def set_pods_ready(self, namespace: str, selector: str, ready: bool, only: Callable[[dict], bool] | None = None,
                       ) -> int:
        """What a kubelet would report: the pods' Ready condition (no kubelet runs here)."""
        count = 0
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for pod in self.core.list_namespaced_pod(namespace, label_selector=selector).items:
            raw = self.api.sanitize_for_serialization(pod)
            if only is not None and not only(raw):
                continue
            if pod.metadata.deletion_timestamp:
                continue
            status = "True" if ready else "False"
            self.core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
                "phase": "Running", "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": stamp},
                                                   {"type": "ContainersReady", "status": status,
                                                    "lastTransitionTime": stamp}]}})
            count += 1
        return count


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def writes_by_operator(cp, since) -> list:
    """Every write the operator's ServiceAccount made since `since` (any verb, any code)."""
    return [e for e in cp.audit_events(since=since, user=OPERATOR_USER)]
