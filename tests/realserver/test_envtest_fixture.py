"""The real-server fixture itself (tests/envtest.py): a broken KUBEBUILDER_ASSETS fails
instead of skipping, RBAC is enforced for a ServiceAccount's token, the audit log counts
writes, and stop() leaves no process and no files."""

from __future__ import annotations

import os

import pytest

from tests.envtest import AssetsMissing, ControlPlane, now


def test_assets_without_a_binary_fail_rather_than_skip(tmp_path, monkeypatch):
    (tmp_path / "etcd").write_text("")
    (tmp_path / "etcd").chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))        # no system etcd either
    with pytest.raises(AssetsMissing, match="kube-apiserver"):
        ControlPlane()


def test_service_account_token_is_held_to_rbac_and_writes_are_audited(envtest_assets):
    from kubernetes import client
    with ControlPlane(assets=envtest_assets) as cp:
        start = now()
        kubeconfig = cp.service_account_kubeconfig("audit-test", "nobody")
        with cp.api_client(kubeconfig) as api:
            with pytest.raises(client.ApiException) as err:
                client.CoreV1Api(api).create_namespaced_config_map(
                    "audit-test", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
        assert err.value.status == 403
        writes = cp.audit_writes(since=start)
        sa = "system:serviceaccount:audit-test:nobody"
        assert writes[(sa, "create", "configmaps", 403)] == 1
        assert writes[("admin", "create", "namespaces", 201)] == 1
        assert writes[("admin", "create", "serviceaccounts/token", 201)] == 1
        assert not cp.audit_writes(since=now())
        pids = [p.pid for p in cp._procs.values()]
        workdir = cp.dir
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not workdir.exists()
