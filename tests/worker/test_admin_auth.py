"""Only the operator drains or undrains a gateway: its signed requests against the real
gateway's admin server (aiohttp), signed by the operator's own signer; the pod's preStop
through the Unix socket; `speechops up` (no operator key) from this machine only.

No Triton: the admin endpoints answer without it (readiness then says Triton is not ready,
and draining says so first)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from speechops_contract import names
from speechops_contract.api import parse_spec
from speechops.admin_signing import AdminSigner, from_environment
from speechops.resources.worker import DRAIN_SCRIPT
from speechops_worker.gateway.admin_auth import AdminAuth
from speechops_worker.gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.asyncio

NS, POD = "speech", "assistant-worker-7d9f-abcde"
VAD_ONLY = parse_spec({"stages": [{"name": "vad", "model": "silero_vad"}]})


def operator_signer() -> AdminSigner:
    return from_environment({})     # a key of its own, as an operator without a key file makes


def publish(directory: Path, *signers: AdminSigner) -> Path:
    """The public keys as the kubelet lays out a mounted ConfigMap item: the file is a
    symlink into a `..data` directory swapped atomically on change."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"..{len(list(directory.glob('..2*')))}"
    target = directory / f"..2{stamp}"
    target.mkdir()
    (target / names.ADMIN_PUBLIC_KEY_ITEM).write_text("".join(s.public_pem for s in signers))
    tmp = directory / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, directory / "..data")
    link = directory / names.ADMIN_PUBLIC_KEY_ITEM
    if not link.is_symlink():
        link.symlink_to(f"..data/{names.ADMIN_PUBLIC_KEY_ITEM}")
    return link


@contextlib.asynccontextmanager
async def gateway(**config):
    gw = Gateway(GatewayConfig(triton_url="127.0.0.1:1", pipelines={"vad": VAD_ONLY}, namespace=NS, pod_name=POD,
                               infer_timeout_s=1.0, **config))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def post(gw: Gateway, path: str, authorization: str | None = None, method: str = "POST") -> tuple[int, str]:
    headers = {"Authorization": authorization} if authorization else {}
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}{path}", data=b"" if method == "POST" else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def refusals(gw: Gateway) -> dict[str, float]:
    out = {}
    for metric in gw.metrics.admin_refused.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["reason"]] = sample.value
    return out


async def call(gw, *args, **kwargs):
    return await asyncio.to_thread(post, gw, *args, **kwargs)


async def test_the_operators_signature_drains_and_undrains_and_nothing_else_does(tmp_path, caplog):
    op = operator_signer()
    keys = publish(tmp_path / "admin", op)
    async with gateway(admin_public_keys=str(keys)) as gw:
        # Metrics and probes stay open: Prometheus and the kubelet carry no signature.
        assert (await call(gw, "/metrics", method="GET"))[0] == 200
        assert (await call(gw, "/healthz", method="GET"))[0] == 200

        status, body = await call(gw, "/drain")
        assert (status, body.split(":")[0]) == (401, "missing_signature")
        assert not gw.draining

        good = op.authorization("POST", "/drain", NS, POD)
        assert (await call(gw, "/drain", good))[0] == 202
        assert gw.draining
        # The same signed request twice: a captured request cannot be played back.
        status, body = await call(gw, "/drain", good)
        assert (status, body.split(":")[0]) == (401, "replayed_signature")

        assert (await call(gw, "/undrain", op.authorization("POST", "/undrain", NS, POD)))[0] == 200
        assert not gw.draining

        cases = {
            "unknown_key": operator_signer().authorization("POST", "/drain", NS, POD),
            "wrong_pod": op.authorization("POST", "/drain", NS, "assistant-worker-7d9f-zzzzz"),
            "stale_signature": op.authorization("POST", "/drain", NS, POD, now=time.time() - 120),
            # Signed for /undrain, sent to /drain: the signature covers the path.
            "bad_signature": op.authorization("POST", "/undrain", NS, POD),
            "malformed_signature": "Speechops-Signature key=abc",
        }
        for reason, header in cases.items():
            status, body = await call(gw, "/drain", header)
            assert status == 401 and body.startswith(f"{reason}: "), (reason, body)
            assert not gw.draining, reason
        # A wrong pod says which pod it was signed for; an unknown key which keys are trusted.
        assert f"this is {NS}/{POD}" in (await call(gw, "/drain", cases["wrong_pod"]))[1]
        assert op.key_id in (await call(gw, "/drain", operator_signer().authorization("POST", "/drain", NS, POD)))[1]

        counted = refusals(gw)
        assert counted["missing_signature"] == 1 and counted["replayed_signature"] == 1
        assert all(counted[r] >= 1 for r in cases)
        status, metrics = await call(gw, "/metrics", method="GET")
        assert f'{names.M_ADMIN_REFUSED}{{namespace="{NS}",reason="wrong_pod"}} 2.0' in metrics
    # Logged once per reason (a flood of refusals is a count, not a flood of lines), never the header.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused POST /drain")]
    assert sum(": wrong_pod " in line for line in lines) == 1 and len(lines) == len(counted)
    assert not any("sig=" in line or good in line for line in lines)


async def test_a_new_operator_key_is_taken_from_the_remounted_configmap_without_a_restart(tmp_path, caplog):
    old, new = operator_signer(), operator_signer()
    keys = publish(tmp_path / "admin", old)
    async with gateway(admin_public_keys=str(keys)) as gw:
        assert (await call(gw, "/drain", old.authorization("POST", "/drain", NS, POD)))[0] == 202
        # The operator restarted with another key and republished; the kubelet swaps the file.
        publish(tmp_path / "admin", new)
        await asyncio.sleep(1.1)      # the gateway looks at the file at most once a second
        assert (await call(gw, "/undrain", new.authorization("POST", "/undrain", NS, POD)))[0] == 200
        status, body = await call(gw, "/drain", old.authorization("POST", "/drain", NS, POD))
        assert (status, body.split(":")[0]) == (401, "unknown_key")
    # Neither signatures nor key material are logged; key ids (public fingerprints) are.
    text = caplog.text
    assert new.key_id in text
    assert "BEGIN" not in text and "sig=" not in text


async def test_a_pod_whose_key_has_not_arrived_refuses_tcp_drains_and_the_socket_still_drains(tmp_path):
    sock = tmp_path / "admin.sock"
    async with gateway(admin_public_keys=str(tmp_path / "missing" / "key.pub"), admin_socket=str(sock)) as gw:
        status, body = await call(gw, "/drain", operator_signer().authorization("POST", "/drain", NS, POD))
        assert status == 401 and body.startswith("unknown_key: ") and "has no public key" in body
        # Without a key the gateway does not fall back to trusting loopback.
        assert (await call(gw, "/drain"))[0] == 401
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        # The pod's own preStop hook, exactly as the operator renders it, on the socket.
        script = DRAIN_SCRIPT.replace(names.ADMIN_SOCKET, str(sock)).replace("time.sleep(5)", "")
        run = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], capture_output=True, timeout=30)
        assert run.returncode == 0, run.stderr.decode()
        assert gw.draining


async def test_without_an_operator_key_drain_is_for_this_machine_only():
    # `speechops up`: no operator; the admin port answers drains from loopback only.
    async with gateway() as gw:
        assert (await call(gw, "/drain"))[0] == 202
        assert (await call(gw, "/undrain"))[0] == 200
    auth = AdminAuth(None, NS, POD)
    assert auth.check("POST", "/drain", None, unix_socket=False, peer="::1").allowed
    assert auth.check("POST", "/drain", None, unix_socket=False, peer="::ffff:127.0.0.1").allowed
    refused = auth.check("POST", "/drain", None, unix_socket=False, peer="10.244.1.7")
    assert (refused.allowed, refused.reason) == (False, "not_local")
    # A gateway given a keys file never trusts loopback, even with the file missing.
    keyed = AdminAuth("/nonexistent/key.pub", NS, POD)
    assert not keyed.check("POST", "/drain", None, unix_socket=False, peer="127.0.0.1").allowed
