"""Reconcile benchmark: the real operator process (`speechops run`) against KMock's
Kubernetes emulator, and against a real API server (kube-apiserver v1.36 + controller
manager from KUBEBUILDER_ASSETS, tests/envtest.py) with the chart's ServiceAccount.

Prints:
- apply -> all children present and Ready=True in status, per pipeline (median, p99),
  with N pipelines applied at once; the benchmark plays the Deployment controller by
  marking a worker's pods ready as soon as its Deployment appears;
- API writes per pipeline on a no-op resync (the operator restarted over a converged
  cluster; target 0);
- the operator's RSS with N pipelines.

The emulator runs in this process and scans all objects per request, so absolute
latencies include its cost (the operator itself uses a few % CPU meanwhile); the write
count and RSS do not depend on it. On a loaded 2-core machine the emulator did not get
through 200 pipelines in 10 minutes: use --scale 30..60 there.

On the real server (skipped, and said so, when KUBEBUILDER_ASSETS is unset): N pipelines
(--real 10,200) created at once; apply -> every child present per pipeline (median, p99;
the controller manager makes ReplicaSets and pods, no kubelet runs them), the operator's
CPU and RSS, its API writes per pipeline by verb and resource from the API server's audit
log (reads are not audited), and the writes of a restart over the converged pipelines.

Run: python benchmarks/reconcile.py [--pipelines 30] [--scale 200] [--real 10,200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "contract"), str(REPO / "operator"), str(REPO / "worker")]

from speechops_contract import names  # noqa: E402
from tests.kmock_cluster import Cluster, wait_for, write_kubeconfig  # noqa: E402

NS = "bench"
CHILD_KINDS = {"configmaps", "deployments", "services", "poddisruptionbudgets"}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_key_file(directory: Path) -> Path:
    """An admin key for the run, as the chart's Secret gives one: every restart of the
    operator signs with it (a key per process would rewrite every ConfigMap on a restart)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    path = directory / "admin-key.pem"
    if not path.exists():
        path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def start_operator(kubeconfig: Path, metrics_port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           names.ENV_ADMIN_KEY_FILE: str(admin_key_file(kubeconfig.parent)),
           "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "worker")])}
    return subprocess.Popen([sys.executable, "-m", "speechops.cli", "run", "-A", "--log-format", "json",
                             "--metrics-port", str(metrics_port)],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def snapshot(cluster: Cluster) -> tuple[dict[str, set[str]], dict[str, dict]]:
    """Children present per pipeline, and pipelines by name, read from the emulator's memory."""
    children: dict[str, set[str]] = {}
    pipelines: dict[str, dict] = {}
    for (resource, ns, name), obj in list(cluster.emulator.objects.items()):
        if ns != NS or obj.deleted:
            continue
        if resource.plural in CHILD_KINDS:
            pipeline = obj.raw.get("metadata", {}).get("labels", {}).get(names.LABEL_PIPELINE)
            if pipeline:
                children.setdefault(pipeline, set()).add(f"{resource.plural}/{name}")
        elif resource.plural == "speechpipelines":
            pipelines[name] = obj.raw
    return children, pipelines


def ready(body: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (body.get("status") or {}).get("conditions", []))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", type=int, default=30, help="pipelines applied through the API for latency")
    parser.add_argument("--scale", type=int, default=200,
                        help="converged pipelines added for the restart (no-op resync) and RSS figures")
    parser.add_argument("--batch", type=int, default=10, help="pipelines applied at once")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--real", default="10,200",
                        help="pipeline counts for the real API server ('' to skip it)")
    parser.add_argument("--kmock", action=argparse.BooleanOptionalAction, default=True,
                        help="run the KMock part")
    args = parser.parse_args(argv)
    if args.kmock:
        kmock(args)
    counts = [int(c) for c in args.real.split(",") if c.strip()]
    if counts:
        real_server(counts, args.timeout)
    return 0


def kmock(args: argparse.Namespace) -> None:
    print("== KMock emulator ==")
    n = args.pipelines
    tmp = Path(tempfile.mkdtemp(prefix="speechops-bench-"))
    log = tmp / "operator.log"
    cluster = Cluster()
    kubeconfig = write_kubeconfig(tmp / "kubeconfig", cluster.url)
    metrics_port = free_port()
    operator = start_operator(kubeconfig, metrics_port, log)
    try:
        wait_for(lambda: _metrics_up(metrics_port), timeout=30, what="operator metrics")
        time.sleep(1.0)
        applied: dict[str, float] = {}
        done: dict[str, float] = {}
        marked: set[str] = set()
        op_proc = psutil.Process(operator.pid)
        cpu_start, wall_start = sum(op_proc.cpu_times()[:2]), time.monotonic()
        deadline = time.monotonic() + args.timeout
        # Waves of --batch pipelines applied at once: the emulator is one Python thread
        # and falls over when hundreds of creates arrive together.
        for first in range(0, n, args.batch):
            for i in range(first, min(n, first + args.batch)):
                name = f"p{i:04d}"
                cluster.apply({"apiVersion": "speechops.dev/v1alpha1", "kind": "SpeechPipeline",
                               "metadata": {"name": name, "namespace": NS},
                               "spec": {"profile": ("realtime", "interactive", "batch")[i % 3]}})
                applied[name] = time.monotonic()
            while len(done) < len(applied) and time.monotonic() < deadline:
                children, pipelines = snapshot(cluster)
                now = time.monotonic()
                for name in applied:
                    if name in done:
                        continue
                    have = children.get(name, set())
                    if f"deployments/{names.worker_deployment(name)}" in have and name not in marked:
                        cluster.mark_ready(NS, names.worker_deployment(name))   # the Deployment controller's part
                        marked.add(name)
                    if len(have) == 5 and ready(pipelines.get(name, {})):
                        done[name] = now - applied[name]
                time.sleep(0.2)
        lat = sorted(done.values())
        print(f"pipelines: {n} (applied {args.batch} at a time); converged: {len(lat)}")
        if lat:
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(f"apply -> children + Ready=True: median {statistics.median(lat):.2f}s  p99 {p99:.2f}s  "
                  f"max {lat[-1]:.2f}s")
        wall = time.monotonic() - wall_start
        cpu = sum(op_proc.cpu_times()[:2]) - cpu_start
        ops = [(m, p) for m, p, agent in cluster.requests() if agent == "speechops-operator"]
        print(f"operator CPU while converging: {cpu:.1f}s of {wall:.1f}s wall ({100 * cpu / wall:.0f}%); "
              f"its own API requests: {len(ops) / n:.1f} per pipeline "
              f"({sum(m == 'GET' for m, _ in ops) / n:.1f} reads); the emulator serves ~10 ms per request")
        print(f"operator RSS with {n} pipelines: {op_proc.memory_info().rss / 2**20:.1f} MiB")

        # Scale: --scale converged pipelines loaded straight into the emulator's memory (as
        # the operator leaves them; creating them through its HTTP path takes the
        # single-threaded emulator too long), then a fresh operator resumes them all:
        # count its writes (a no-op resync) and measure its RSS.
        stop(operator)
        preload(cluster, args.scale, admin_key_file(tmp))
        writes_before = len(cluster.writes())
        seen = len(cluster.requests())
        operator = start_operator(kubeconfig, metrics_port, log)
        wait_for(lambda: _metrics_up(metrics_port), timeout=60, what="operator metrics")
        workers = {f"/apis/apps/v1/namespaces/{NS}/deployments/{names.worker_deployment(name)}"
                   for name in scale_names(args.scale)}

        reads: set[str] = set()
        cursor = [seen]

        def all_compared() -> bool:   # every pipeline reconciled: its worker was read back
            time.sleep(1.0)           # scanning the request log holds the GIL the emulator needs
            fresh = list(cluster.emulator._requests[cursor[0]:])
            cursor[0] += len(fresh)
            reads.update(str(r.url.path) for r in fresh if str(r.method).upper().endswith("GET")
                         and r.headers.get("User-Agent") == "speechops-operator")
            return workers <= reads

        started = time.monotonic()
        wait_for(all_compared, timeout=args.timeout, what="every pipeline reconciled after restart")
        resumed = time.monotonic() - started
        time.sleep(2.0)
        new_writes = cluster.writes()[writes_before:]
        total = n + args.scale
        print(f"no-op resync of {total} pipelines after a restart: {len(new_writes)} API writes "
              f"({len(new_writes) / total:.3f} per pipeline; target 0), all compared in {resumed:.1f}s")
        for method, path in new_writes[:5]:
            print(f"  write: {method} {path}")
        print(f"operator RSS with {total} pipelines: {psutil.Process(operator.pid).memory_info().rss / 2**20:.1f} MiB")
    finally:
        stop(operator)
        cluster.close()
    print(f"operator log: {log}")


def real_server(counts: list[int], timeout: float) -> None:
    """The same operator on kube-apiserver + controller manager, as the chart's ServiceAccount."""
    import datetime as dt
    from collections import Counter

    from tests.envtest import ControlPlane, assets_dir, now
    from tests.operator.realkit import OPERATOR_USER, Kube, OperatorProcess, install, pipeline

    print("== real API server (kube-apiserver v1.36 + controller manager, RBAC, chart ServiceAccount) ==")
    if assets_dir() is None:
        print("skipped: KUBEBUILDER_ASSETS is unset (scripts/envtest.sh DIR prints a directory for it)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="speechops-bench-real-"))
    os.environ["PYTHONPATH"] = os.pathsep.join(str(REPO / d) for d in ("contract", "operator", "worker"))
    with ControlPlane(controller_manager=True) as cp:
        kube = Kube(cp)
        op = OperatorProcess(install(cp), tmp / "operator.log").start()
        proc = psutil.Process(op.proc.pid)
        try:
            for n in counts:
                ns = f"real{n}"
                kube.namespace(ns)
                time.sleep(1.0)
                since, cpu0, wall0 = now(), sum(proc.cpu_times()[:2]), time.monotonic()
                applied: dict[str, float] = {}
                for i in range(n):
                    name = f"p{i:04d}"
                    kube.create(pipeline(name, ns, {"profile": ("realtime", "interactive", "batch")[i % 3]}))
                    applied[name] = time.monotonic()
                done: dict[str, float] = {}
                deadline = time.monotonic() + timeout
                while len(done) < n and time.monotonic() < deadline:
                    seen = time.monotonic()
                    per: Counter = Counter(key[1] for key in _real_children(kube, ns))
                    for name in applied:
                        if name not in done and per[name] == 5:
                            done[name] = seen - applied[name]
                    time.sleep(0.5)
                wall, cpu = time.monotonic() - wall0, sum(proc.cpu_times()[:2]) - cpu0
                lat = sorted(done.values())
                writes = [e for e in cp.audit_events(since=since, user=OPERATOR_USER)]
                by = Counter((e.verb, e.resource) for e in writes)
                refused = sum(e.code >= 400 for e in writes)
                print(f"{n} pipelines created at once; all 5 children present for {len(lat)}")
                if lat:
                    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
                    print(f"  apply -> children: median {statistics.median(lat):.2f}s  p99 {p99:.2f}s  "
                          f"max {lat[-1]:.2f}s")
                print(f"  operator CPU: {cpu:.1f}s over {wall:.1f}s ({100 * cpu / wall:.0f}%); "
                      f"RSS {proc.memory_info().rss / 2**20:.1f} MiB")
                print(f"  operator API writes: {len(writes) / n:.2f} per pipeline ({refused} refused): "
                      + ", ".join(f"{verb} {res} {c / n:.2f}" for (verb, res), c in sorted(by.items())))
                for e in [e for e in writes if e.code >= 400][:5]:
                    print(f"  refused: {e.verb} {e.resource} {e.namespace}/{e.name} -> {e.code}")
            # A restart over everything converged: what it writes. Converged = no write for
            # 20 s (pods keep appearing for a while, and their readiness is news).
            settle = time.monotonic()
            while time.monotonic() - settle < 600 and cp.audit_events(
                    since=now() - dt.timedelta(seconds=20), user=OPERATOR_USER, settle=0):
                time.sleep(2)
            print(f"quiet (no operator write for 20 s) {time.monotonic() - settle:.0f} s after the last check")
            op.stop()
            since = now()
            op.start()
            proc = psutil.Process(op.proc.pid)
            time.sleep(30)
            writes = cp.audit_events(since=since, user=OPERATOR_USER)
            total = sum(counts)
            print(f"restart over {total} converged pipelines: {len(writes)} API writes in 30 s "
                  f"({len(writes) / total:.3f} per pipeline; target 0); RSS {proc.memory_info().rss / 2**20:.1f} MiB")
            for e in writes[:5]:
                print(f"  write: {e.verb} {e.resource} {e.namespace}/{e.name} -> {e.code}")
        finally:
            op.stop()


def _real_children(kube, namespace: str) -> list[tuple[str, str]]:
    """(kind, pipeline) for every speechops child in the namespace."""
    return [(kind, (obj["metadata"].get("labels") or {}).get(names.LABEL_PIPELINE, ""))
            for (kind, _), obj in kube.children(namespace).items()]


def scale_names(count: int) -> list[str]:
    return [f"s{i:04d}" for i in range(count)]


def preload(cluster: Cluster, count: int, admin_key: Path) -> None:
    """Converged pipelines, written into the emulator's memory: each pipeline with its
    children as the operator builds them (with the public half of `admin_key`) and a
    Ready status."""
    import uuid

    from speechops_contract.api import API_VERSION, GROUP, KIND, PLURAL, parse_spec
    from speechops.admin_signing import load
    from speechops.reconcile import adopt, auth_condition, worker_status
    from speechops.resources.desired import desired_state

    public_pem = load(str(admin_key)).public_pem
    plural = {"ConfigMap": "v1/configmaps", "Service": "v1/services", "Deployment": "apps/v1/deployments",
              "PodDisruptionBudget": "policy/v1/poddisruptionbudgets"}
    objects = cluster.emulator.objects
    for name in scale_names(count):
        raw_spec = {"profile": ("realtime", "interactive", "batch")[hash(name) % 3]}
        body = {"apiVersion": API_VERSION, "kind": KIND, "spec": raw_spec,
                "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "generation": 1,
                             # What kopf leaves on a pipeline it has handled.
                             "finalizers": [f"{GROUP}/cleanup"],
                             "annotations": {f"{GROUP}/last-handled-configuration":
                                             json.dumps({"spec": raw_spec}, separators=(",", ":"))}}}
        worker = None
        for child in desired_state(name, NS, parse_spec(raw_spec), public_pem).children:
            child = adopt(child, body)
            if child["kind"] == "Deployment" and child["metadata"]["name"] == names.worker_deployment(name):
                want = child["spec"]["replicas"]
                child["status"] = {"replicas": want, "readyReplicas": want, "updatedReplicas": want}
                worker = child
            objects[plural[child["kind"]], NS, child["metadata"]["name"]] = child
        body["status"] = worker_status(body, worker)
        body["status"]["conditions"] = auth_condition(body["status"]["conditions"], parse_spec(raw_spec), 1)
        objects[f"{API_VERSION}/{PLURAL}", NS, name] = body


def _metrics_up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("reconcile", main, sys.argv[1:]))
