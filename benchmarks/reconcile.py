"""Reconcile benchmark: the real operator process (`speechops run`) against KMock's
Kubernetes emulator.

Prints:
- apply -> all children present and Ready=True in status, per pipeline (median, p99),
  with N pipelines applied at once; the benchmark plays the Deployment controller by
  marking a worker's pods ready as soon as its Deployment appears;
- API writes per pipeline on a no-op resync (the operator restarted over a converged
  cluster; target 0);
- the operator's RSS with N pipelines.

The emulator runs in this process and scans all objects per request, so absolute
latencies include its cost; the write count and RSS do not depend on it.

Run: PYTHONPATH=operator:worker:. python benchmarks/reconcile.py [--pipelines 200]
"""

from __future__ import annotations

import argparse
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
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "worker")]

from speechops import names  # noqa: E402
from tests.kmock_cluster import Cluster, wait_for, write_kubeconfig  # noqa: E402

NS = "bench"
CHILD_KINDS = {"configmaps", "deployments", "services", "poddisruptionbudgets"}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_operator(kubeconfig: Path, metrics_port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
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
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10, help="pipelines applied at once")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args(argv)
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
        rss = op_proc.memory_info().rss
        print(f"operator RSS with {n} pipelines: {rss / 2**20:.1f} MiB")

        # No-op resync: restart over the converged cluster; count writes while every
        # pipeline is resumed (reconciled) once.
        stop(operator)
        writes_before = len(cluster.writes())
        operator = start_operator(kubeconfig, metrics_port, log)
        wait_for(lambda: _metrics_up(metrics_port), timeout=30, what="operator metrics")
        seen = len(cluster.requests())
        workers = {f"/apis/apps/v1/namespaces/{NS}/deployments/{names.worker_deployment(f'p{i:04d}')}"
                   for i in range(n)}

        def all_compared() -> bool:   # every pipeline reconciled: its worker was read back
            reads = {p for m, p, agent in cluster.requests()[seen:] if m == "GET" and agent == "speechops-operator"}
            return workers <= reads

        wait_for(all_compared, timeout=args.timeout, what="every pipeline reconciled after restart")
        time.sleep(2.0)
        new_writes = cluster.writes()[writes_before:]
        print(f"no-op resync: {n} pipelines reconciled, {len(new_writes)} API writes "
              f"({len(new_writes) / n:.3f} per pipeline; target 0)")
        for method, path in new_writes[:5]:
            print(f"  write: {method} {path}")
    finally:
        stop(operator)
        cluster.close()
    print(f"operator log: {log}")
    return 0


def _metrics_up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
