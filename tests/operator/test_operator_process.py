"""`speechops run` as its own process: metrics, liveness endpoint and JSON decision logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.crd_schema import REPO
from tests.kmock_cluster import Cluster, wait_for, write_kubeconfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> str | None:
    try:
        return urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None


@pytest.fixture()
def process_cluster(tmp_path):
    cluster = Cluster()
    yield cluster, write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    cluster.close()


def test_run_serves_metrics_liveness_and_json_decision_logs(process_cluster, tmp_path):
    cluster, kubeconfig = process_cluster
    metrics_port, liveness_port = free_port(), free_port()
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechops.cli", "run", "-A", "--log-format", "json",
         "--metrics-port", str(metrics_port), "--liveness", f"http://127.0.0.1:{liveness_port}/healthz"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: fetch(f"http://127.0.0.1:{liveness_port}/healthz") is not None, timeout=30,
                 what="liveness endpoint")
        cluster.apply({"apiVersion": "speechops.dev/v1alpha1", "kind": "SpeechPipeline",
                       "metadata": {"name": "metered", "namespace": "ops"}, "spec": {}})
        metrics = wait_for(lambda: (m := fetch(f"http://127.0.0.1:{metrics_port}/metrics")) and
                           'speechops_operator_reconciles_total{result="ok",trigger="create"}' in m and m,
                           timeout=30, what="reconcile metric")
        assert "speechops_operator_reconcile_duration_seconds_bucket" in metrics
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    decisions = [d for d in lines if d.get("pipeline") == "ops/metered"]
    assert {"Created"} <= {d["reason"] for d in decisions}
    assert any(d["message"] == "created Deployment metered-worker" for d in decisions)
