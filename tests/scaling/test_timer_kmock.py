"""The scaler's kopf timer against KMock: it patches the worker and reserve Deployments'
replicas, pod deletion costs, status and the ScalingActive condition, drains before it
removes, and falls back to the gateways' counts when Prometheus is down.

KMock runs on its own event loop in a thread, the operator in kopf's KopfRunner thread,
and the gateways are real prometheus_client exporters on 127.0.0.x loopback addresses.
"""

from __future__ import annotations

import asyncio
import http.server
import math
import socket
import threading
import time
from pathlib import Path

import kmock
import kopf.testing
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from speechops_contract import names
from speechops.admin_signing import process_signer
from speechops_worker.gateway.admin_auth import AdminAuth

pytestmark = pytest.mark.prometheus
HERE = Path(__file__).parent
NS = "speech"
CRD = "speechops.dev/v1alpha1/speechpipelines"


class Emulator:
    """KMock's Kubernetes emulator served from its own loop, so sync clients can call it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "KMock did not start"

    async def _main(self):
        self.stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as k, kmock.Server(k):
            k.resources.load_bundled()
            k.resources[CRD] = {"kind": "SpeechPipeline", "namespaced": True, "singular": "speechpipeline",
                                "verbs": {"list", "watch", "get", "patch", "create"}, "subresources": {"status"}}
            self.k = k
            self.url = str(k.url).rstrip("/")
            self.ready.set()
            await self.stop.wait()

    def put(self, resource: str, obj: dict) -> None:
        meta = obj["metadata"]
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("resourceVersion", "1")
        self.k.objects[resource, NS, meta["name"]] = obj

    def get(self, resource: str, name: str) -> dict:
        return self.k.objects[resource, NS, name]

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


class Gateway:
    """A gateway's admin endpoint: /metrics from a real registry, POST /drain and /undrain
    recorded once the gateway's own verifier accepts their signature (the operator runs in
    this process: its key is `process_signer()`'s)."""

    def __init__(self, ip: str, port: int, pipeline: str, streams: float, pod: str, keys: Path):
        self.registry = CollectorRegistry()
        self.gauge = Gauge(names.M_ACTIVE_STREAMS, "open streams", ["namespace", "pipeline"], registry=self.registry)
        self.gauge.labels(NS, pipeline).set(streams)
        self.posts: list[str] = []
        self.refused: list[str] = []
        keys.write_text(process_signer().public_pem)
        auth = AdminAuth(keys, NS, pod)
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self._answer(generate_latest(gateway.registry))

            def do_POST(self):  # noqa: N802
                verdict = auth.check("POST", self.path, self.headers.get("Authorization"), unix_socket=False,
                                     peer=self.client_address[0])
                if not verdict.allowed:
                    gateway.refused.append(verdict.reason)
                    self._answer(verdict.reason.encode(), 401)
                    return
                gateway.posts.append(self.path)
                self._answer(b"ok\n")

            def _answer(self, body, status=200):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((ip, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def drained(self) -> bool:
        return self.posts[-1:] == ["/drain"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port_on(ips) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        try:
            for ip in ips[1:]:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port on all loopback addresses")


def worker_pod(pipeline: str, name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {names.LABEL_PIPELINE: pipeline, names.LABEL_COMPONENT: "worker"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True",
                                                    "lastTransitionTime": "2026-01-01T00:01:30Z"}]}}


def deployment(name: str, replicas: int) -> dict:
    labels = {names.LABEL_PIPELINE: name.rsplit("-", 1)[0], names.LABEL_COMPONENT: name.rsplit("-", 1)[1]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "x", "image": "x"}]}}}}


def pipeline(name: str, spec: dict) -> dict:
    return {"apiVersion": "speechops.dev/v1alpha1", "kind": "SpeechPipeline",
            "metadata": {"name": name, "generation": 1}, "spec": spec}


def wait_for(check, timeout=40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (KeyError, TypeError, IndexError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    emu = Emulator()
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
current-context: kmock
clusters: [{{name: kmock, cluster: {{server: "{emu.url}"}}}}]
contexts: [{{name: kmock, context: {{cluster: kmock, user: kmock}}}}]
users: [{{name: kmock, user: {{token: test}}}}]
""")
    monkeypatch.setenv("KUBECONFIG", str(config))
    yield emu
    emu.close()


def test_timer_scales_drains_and_reports(cluster, prometheus, monkeypatch, kopf_registry, tmp_path):
    kopf_registry("speechops.scaling.handlers")   # the timer alone, whatever ran before
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = free_port_on(ips)
    monkeypatch.setenv("SPEECHOPS_GATEWAY_ADMIN_PORT", str(port))
    # Forecast pipeline: demand from Prometheus' two weeks of history.
    cluster.put(CRD, pipeline(prometheus.pipeline, {
        "capacity": {"streamsPerReplica": 16, "minReplicas": 2, "maxReplicas": 100},
        "scaling": {"prometheusUrl": prometheus.url, "history": "14d"}}))
    cluster.put("apps/v1/deployments", deployment(names.worker_deployment(prometheus.pipeline), 2))
    cluster.put("apps/v1/deployments", deployment(names.reserve_deployment(prometheus.pipeline), 0))
    # Reactive pipeline whose Prometheus is down: three gateways, one of them empty.
    cluster.put(CRD, pipeline("dictation", {
        "capacity": {"streamsPerReplica": 16, "minReplicas": 1, "maxReplicas": 10},
        "scaling": {"mode": "reactive", "prometheusUrl": "http://127.0.0.1:9", "scaleDownDelay": "0s"},
        "reserve": {"mode": "none"}}))
    cluster.put("apps/v1/deployments", deployment("dictation-worker", 3))
    cluster.put("apps/v1/deployments", deployment("dictation-reserve", 0))
    load = {"dictation-a": 0.0, "dictation-b": 9.0, "dictation-c": 11.0}
    gateways = {}
    for (pod_name, streams), ip in zip(load.items(), ips):
        cluster.put("v1/pods", worker_pod("dictation", pod_name, ip))
        gateways[pod_name] = Gateway(ip, port, "dictation", streams, pod_name, tmp_path / f"{pod_name}.pub")
    try:
        args = ["run", "--standalone", "-A", "--verbose", str(HERE / "scaler_operator.py")]
        with kopf.testing.KopfRunner(args, timeout=90) as runner:
            # Forecast pipeline: status, condition and the Deployment's replicas agree.
            status = wait_for(lambda: cluster.get(CRD, prometheus.pipeline)["status"].get("forecast")
                              and cluster.get(CRD, prometheus.pipeline)["status"])
            forecast = status["forecast"]
            # The policy's rule: the expected demand at 80% of capacity, the band's top at 90%.
            need = max(math.ceil(forecast["expected"] / (16 * 0.8) - 1e-9),
                       math.ceil(forecast["upper"] / (16 * 0.9) - 1e-9), 2)
            assert status["desiredReplicas"] >= need
            assert forecast["horizon"] == "180s" and forecast["reason"].startswith("forecast ")
            cond = next(c for c in status["conditions"] if c["type"] == "ScalingActive")
            assert cond["status"] == "True" and cond["reason"] == "Forecasting"
            worker = names.worker_deployment(prometheus.pipeline)
            # Each tick may revise the forecast: compare with the status of the same moment.
            wait_for(lambda: cluster.get("apps/v1/deployments", worker)["spec"]["replicas"]
                     == cluster.get(CRD, prometheus.pipeline)["status"]["desiredReplicas"])

            # Reactive pipeline on gateway counts: 20 streams need 2 pods; the empty one
            # drains first, and goes only once it is draining and still empty.
            wait_for(lambda: gateways["dictation-a"].drained)
            wait_for(lambda: cluster.get("apps/v1/deployments", "dictation-worker")["spec"]["replicas"] == 2)
            pods = {n: cluster.get("v1/pods", n)["metadata"]["annotations"] for n in load}
            assert pods["dictation-a"][names.ANNOTATION_DRAINING] == "true"
            assert pods["dictation-a"][names.POD_DELETION_COST] == "-1000"
            assert int(pods["dictation-b"][names.POD_DELETION_COST]) == 9
            assert not gateways["dictation-b"].drained and not gateways["dictation-c"].drained
            dictation = cluster.get(CRD, "dictation")["status"]
            cond = next(c for c in dictation["conditions"] if c["type"] == "ScalingActive")
            assert (cond["status"], cond["reason"]) == ("False", "PrometheusUnavailable")
            assert dictation["desiredReplicas"] == 2 and dictation["activeStreams"] == 20

            # Demand comes back while the drained pod still holds streams: it is taken back
            # into service (it serves at once; a new pod would take a start), not replaced.
            for pod_name, streams in (("dictation-a", 4.0), ("dictation-b", 16.0), ("dictation-c", 16.0)):
                gateways[pod_name].gauge.labels(NS, "dictation").set(streams)
            wait_for(lambda: gateways["dictation-a"].posts[-1:] == ["/undrain"])
            wait_for(lambda: cluster.get("apps/v1/deployments", "dictation-worker")["spec"]["replicas"] == 3)
            wait_for(lambda: names.ANNOTATION_DRAINING not in cluster.get("v1/pods", "dictation-a")["metadata"]["annotations"])
            assert int(cluster.get("v1/pods", "dictation-a")["metadata"]["annotations"][names.POD_DELETION_COST]) == 4
            # kopf posts Events with generateName, which KMock does not expand: the first lands.
            events = [dict(obj) for key, obj in cluster.k.objects.items() if "events" in str(key[0])]
        assert runner.exit_code == 0, runner.output
        assert "scaling 3→2" in runner.output or "ScaleDown" in runner.output
        assert "pod dictation-a taken back into service" in runner.output
        assert not any(g.refused for g in gateways.values()), {n: g.refused for n, g in gateways.items()}
        assert any("scaling" in e.get("message", "") and e.get("reason", "").startswith("Scale") for e in events), events
    finally:
        for g in gateways.values():
            g.close()


def hpa(name: str, deployment: str) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                     "minReplicas": 1, "maxReplicas": 10}}


@pytest.mark.parametrize("dry_run, rival, reason, says", [
    (True, None, "PrometheusUnavailable", "dryRun: recommending only, nothing applied"),
    (False, "notes-cpu", "ConflictingAutoscaler", "HorizontalPodAutoscaler notes-cpu also scales notes-worker"),
], ids=["dry-run", "hpa-on-the-workers"])
def test_a_withheld_plan_is_recommended_and_explained_but_changes_nothing(cluster, monkeypatch, kopf_registry, tmp_path,
                                                                         dry_run, rival, reason, says):
    kopf_registry("speechops.scaling.handlers")
    ips = ["127.0.0.5", "127.0.0.6", "127.0.0.7"]
    port = free_port_on(ips)
    monkeypatch.setenv("SPEECHOPS_GATEWAY_ADMIN_PORT", str(port))
    # Three gateways with 0, 9 and 11 streams: 20 streams need 2 pods of 16 at 0.8.
    cluster.put(CRD, pipeline("notes", {
        "capacity": {"streamsPerReplica": 16, "minReplicas": 1, "maxReplicas": 10},
        "scaling": {"mode": "reactive", "prometheusUrl": "http://127.0.0.1:9", "scaleDownDelay": "0s",
                    "dryRun": dry_run}}))
    cluster.put("apps/v1/deployments", deployment("notes-worker", 3))
    cluster.put("apps/v1/deployments", deployment("notes-reserve", 1))
    if rival:
        cluster.put("autoscaling/v2/horizontalpodautoscalers", hpa(rival, "notes-worker"))
        cluster.put("autoscaling/v2/horizontalpodautoscalers", hpa("other", "elsewhere-worker"))
    gateways = {}
    for (pod_name, streams), ip in zip({"notes-a": 0.0, "notes-b": 9.0, "notes-c": 11.0}.items(), ips):
        cluster.put("v1/pods", worker_pod("notes", pod_name, ip))
        gateways[pod_name] = Gateway(ip, port, "notes", streams, pod_name, tmp_path / f"{pod_name}.pub")
    try:
        args = ["run", "--standalone", "-A", "--verbose", str(HERE / "scaler_operator.py")]
        with kopf.testing.KopfRunner(args, timeout=60) as runner:
            status = wait_for(lambda: cluster.get(CRD, "notes")["status"].get("desiredReplicas") == 2
                              and cluster.get(CRD, "notes")["status"])
            cond = next(c for c in status["conditions"] if c["type"] == "ScalingActive")
            assert cond["status"] == "False" and cond["reason"] == reason and says in cond["message"], cond
            # A tick's writes to pods and Deployments come before its status: none were made.
            assert cluster.get("apps/v1/deployments", "notes-worker")["spec"]["replicas"] == 3
            assert cluster.get("apps/v1/deployments", "notes-reserve")["spec"]["replicas"] == 1
            assert all(not g.posts for g in gateways.values())
            assert all(not cluster.get("v1/pods", n)["metadata"].get("annotations") for n in gateways)
            events = [dict(obj) for key, obj in cluster.k.objects.items() if "events" in str(key[0])]
        assert runner.exit_code == 0, runner.output
        prefix = "dry run, not applied" if dry_run else f"not applied, HorizontalPodAutoscaler {rival} scales notes-worker"
        assert f"{prefix}: live streams need 2 replicas: scaling 3→2" in runner.output
        assert any(e.get("message", "").startswith(prefix) for e in events), events
    finally:
        for g in gateways.values():
            g.close()


def test_a_scaler_that_starts_recommending_only_takes_back_its_drains(cluster, monkeypatch, kopf_registry, tmp_path):
    # notes-a was told to drain before dryRun was set: nothing would remove it now, and
    # it takes no new streams, so it is taken back into service.
    kopf_registry("speechops.scaling.handlers")
    ips = ["127.0.0.8", "127.0.0.9"]
    port = free_port_on(ips)
    monkeypatch.setenv("SPEECHOPS_GATEWAY_ADMIN_PORT", str(port))
    cluster.put(CRD, pipeline("notes", {
        "capacity": {"streamsPerReplica": 16, "minReplicas": 1, "maxReplicas": 10},
        "scaling": {"mode": "reactive", "prometheusUrl": "http://127.0.0.1:9", "dryRun": True}}))
    cluster.put("apps/v1/deployments", deployment("notes-worker", 2))
    cluster.put("apps/v1/deployments", deployment("notes-reserve", 0))
    gateways = {}
    for (pod_name, streams), ip in zip({"notes-a": 3.0, "notes-b": 9.0}.items(), ips):
        pod = worker_pod("notes", pod_name, ip)
        if pod_name == "notes-a":
            pod["metadata"]["annotations"] = {names.ANNOTATION_DRAINING: "true"}
        cluster.put("v1/pods", pod)
        gateways[pod_name] = Gateway(ip, port, "notes", streams, pod_name, tmp_path / f"{pod_name}.pub")
    try:
        args = ["run", "--standalone", "-A", "--verbose", str(HERE / "scaler_operator.py")]
        with kopf.testing.KopfRunner(args, timeout=60) as runner:
            wait_for(lambda: gateways["notes-a"].posts == ["/undrain"])
            wait_for(lambda: names.ANNOTATION_DRAINING
                     not in (cluster.get("v1/pods", "notes-a")["metadata"].get("annotations") or {}))
            assert not gateways["notes-b"].posts and not gateways["notes-a"].refused
            assert cluster.get("apps/v1/deployments", "notes-worker")["spec"]["replicas"] == 2
        assert runner.exit_code == 0, runner.output
        assert "pod notes-a taken back into service: the scaler only recommends now (dry run, not applied)" \
            in runner.output
    finally:
        for g in gateways.values():
            g.close()
