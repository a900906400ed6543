"""The scaler's drain and undrain reach a real gateway (its aiohttp admin server, no
Triton needed) and are accepted for their signature; a key the gateway does not know, or
a pod IP now held by another pod, is refused and the scaler says why."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from speechops_contract import names
from speechops_contract.api import parse_spec
from speechops.admin_signing import from_environment
from speechops.scaling import actions, signals
from speechops_worker.gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.asyncio
NS, POD = "speech", "notes-worker-5c6d-x1y2z"


def pod(name: str = POD) -> dict:
    return {"metadata": {"name": name, "namespace": NS}, "status": {"podIP": "127.0.0.1"}}


async def test_the_scalers_signed_drain_is_accepted_by_a_real_gateway(tmp_path: Path, monkeypatch, caplog):
    signer = from_environment({})
    keys = tmp_path / names.ADMIN_PUBLIC_KEY_ITEM
    keys.write_text(signer.public_pem)
    gw = Gateway(GatewayConfig(triton_url="127.0.0.1:1", namespace=NS, pod_name=POD, admin_public_keys=str(keys),
                               pipelines={"notes": parse_spec({"stages": [{"name": "vad", "model": "silero_vad"}]})}))
    await gw.start()
    try:
        monkeypatch.setenv("SPEECHOPS_GATEWAY_ADMIN_PORT", str(gw.admin_port))
        assert await asyncio.to_thread(actions.request_drain, pod(), signer)
        assert gw.draining
        assert await asyncio.to_thread(actions.request_undrain, pod(), signer)
        assert not gw.draining
        # Another operator's key (a restart before the ConfigMap caught up) is refused, and said so.
        with caplog.at_level(logging.WARNING, logger="speechops.scaler"):
            assert not await asyncio.to_thread(actions.request_drain, pod(), from_environment({}))
        assert f"pod {NS}/{POD} refused /drain: unknown_key" in caplog.text
        # The pod IP the scaler listed now belongs to another worker: that one stays serving.
        assert not await asyncio.to_thread(actions.request_drain, pod("notes-worker-5c6d-other"), signer)
        assert not gw.draining
        assert "wrong_pod" in caplog.text
    finally:
        await gw.stop()


async def test_a_pod_with_an_ipv6_address_is_drained_and_read(tmp_path: Path, monkeypatch):
    # Single-stack IPv6 clusters give pods addresses like fd00::5; the URL needs brackets.
    signer = from_environment({})
    keys = tmp_path / names.ADMIN_PUBLIC_KEY_ITEM
    keys.write_text(signer.public_pem)
    gw = Gateway(GatewayConfig(triton_url="127.0.0.1:1", host="::1", namespace=NS, pod_name=POD,
                               admin_public_keys=str(keys),
                               pipelines={"notes": parse_spec({"stages": [{"name": "vad", "model": "silero_vad"}]})}))
    await gw.start()
    try:
        monkeypatch.setenv("SPEECHOPS_GATEWAY_ADMIN_PORT", str(gw.admin_port))
        v6 = {"metadata": {"name": POD, "namespace": NS}, "status": {"podIP": "::1"}}
        assert await asyncio.to_thread(actions.request_drain, v6, signer)
        assert gw.draining
        reading = await asyncio.to_thread(signals.read_gateway, v6)
        assert reading is not None and reading.streams == 0
    finally:
        await gw.stop()
