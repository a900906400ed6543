"""Both protocols under hostile input (tests/worker/fuzzkit.py): 10^5 messages driven into
the gateway's own connection handlers in-process (a recording socket stands in for picows'
transport; the gateway, its sessions, packers and the real tritonserver are real), a
sample over real sockets, and good streams (the openai SDK and the native client)
transcribing beside them the whole time.

Checked: no stream crashes the gateway (no internal_error, nothing logged as a failure),
every bad stream ends with the protocol's `error` and a close, odd-but-legal streams are
not closed for it, nothing is left behind (sessions, connections, admission counts, VAD
state in Triton), and the good streams' transcripts are what they are without the fuzz."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import numpy as np
import pytest
from picows import WSMsgType, ws_connect

import speech
from speechops_worker import realtime_client as RC
from speechops_worker.client import _Listener, stream_audio
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway import realtime as R
from speechops_worker.gateway.realtime_conn import MAX_APPEND_S
from speechops_worker.gateway.server import STREAM_PATH
from speechops_worker.gateway.transcript import word_error_rate
from tests.worker import fuzzkit
from tests.worker.test_gateway_streams import eventually, vad_streams_in_triton
from tests.worker.test_realtime_sdk import ASR, gateway, padded, wire

pytestmark = [pytest.mark.triton, pytest.mark.asyncio, pytest.mark.slow,
              pytest.mark.skipif(not speech.have_tools(), reason="espeak-ng and sox are needed")]

MESSAGES = 100_000
GOOD = ("Turn off the lights in the kitchen before you go to bed.",
        "The train to the city leaves at half past seven in the morning.")


class _Under:
    def get_extra_info(self, name):
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Socket:
    """What a connection writes to its client, recorded (the transport's interface)."""

    underlying_transport = _Under()

    def __init__(self):
        self.sent: list[bytes] = []
        self.close_code = None
        self.is_disconnected = False

    def send(self, msg_type, data) -> None:
        assert not self.is_disconnected, "sent after disconnect"
        self.sent.append(bytes(data))

    def send_close(self, code=None) -> None:
        self.close_code = code

    def disconnect(self, graceful: bool = True) -> None:
        self.is_disconnected = True

    def events(self) -> list[dict]:
        return [json.loads(b) for b in self.sent]


class Frame:
    fin = True

    def __init__(self, data: str | bytes):
        self.msg_type = WSMsgType.BINARY if isinstance(data, bytes) else WSMsgType.TEXT
        self.payload = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")

    def get_payload_as_bytes(self) -> bytes:
        return self.payload

    def get_payload_as_memoryview(self) -> memoryview:
        return memoryview(self.payload)

    def get_payload_as_utf8_text(self) -> str:
        return self.payload.decode("utf-8")


def drive(gw, path: str, stream: fuzzkit.Stream) -> tuple[Socket, bool]:
    """One hostile stream through the gateway's handler for `path`; (socket, closed by the gateway)."""
    conn = gw.routes[path](gw)
    conn.query = "intent=transcription"
    sock = Socket()
    conn.on_ws_connected(sock)
    for frame in stream.frames:
        if sock.is_disconnected:
            break
        conn.on_ws_frame(sock, Frame(frame))
    closed = sock.is_disconnected
    if not closed:
        sock.is_disconnected = True          # the client goes away
        conn.on_ws_disconnected(sock)
    else:
        conn.on_ws_disconnected(sock)        # picows calls it after the gateway's disconnect too
    return sock, closed


def check(stream: fuzzkit.Stream, sock: Socket, closed: bool, protocol: str) -> None:
    events = sock.events()
    codes = [e["error"]["code"] if protocol == "realtime" else e["code"] for e in events if e["type"] == "error"]
    assert P.E_INTERNAL not in codes, (stream, events)
    if stream.bad is True:
        assert closed and codes, (stream.kind, stream.frames[-1][:200], events)
    if closed:
        assert codes, (stream.kind, events)             # never closed without saying why
        if protocol == "native":
            assert events[-1]["type"] == "closed"
    if stream.bad is False:
        assert not closed, (stream.kind, events)


async def good_streams(gw) -> list[str]:
    """Two realtime sessions (the openai SDK; pcm and pcmu) and one native stream, fast."""
    audio = [padded(speech.synthesize(text), 16000) for text in GOOD]
    url = f"ws://127.0.0.1:{gw.port}"
    results = await asyncio.gather(
        RC.transcribe(f"{url}/v1", wire(audio[0], 16000, "pcm"), "pcm"),
        RC.transcribe(f"{url}/v1", wire(audio[1], 16000, "pcm"), "pcm"),
        stream_audio(f"{url}{STREAM_PATH}", audio[0], realtime=False, options={"partials": False}))
    for r in results[:2]:
        assert not [e for e in r.errors if e["code"] != "input_audio_buffer_commit_empty"], r.errors
    assert results[2].error is None
    return [results[0].transcript, results[1].transcript, results[2].transcript]


async def test_hostile_messages_in_process_beside_good_streams(triton_server, caplog):
    caplog.set_level(logging.ERROR, logger="speechops.gateway")
    rng = random.Random(20261203)
    async with gateway(triton_server, pipelines={"asr": ASR}) as gw:
        baseline = await good_streams(gw)
        for text, got in zip(GOOD + GOOD[:1], baseline):
            assert word_error_rate(text, got) <= 0.15, got
        max_b64 = R.max_append_b64(int(MAX_APPEND_S * 24000 * 2))
        good = asyncio.ensure_future(good_streams(gw))
        sent = streams = bad = 0
        kinds: dict[str, int] = {}
        while sent < MESSAGES:
            for _ in range(200):                 # then let the good streams and Triton's answers in
                if rng.random() < 0.5:
                    stream, path, protocol = fuzzkit.realtime_stream(rng, max_b64), R.PATH, "realtime"
                else:
                    stream, path, protocol = fuzzkit.native_stream(rng, gw.config.max_frame_bytes), STREAM_PATH, "native"
                sock, closed = drive(gw, path, stream)
                check(stream, sock, closed, protocol)
                sent += len(stream.frames)
                streams += 1
                bad += closed
                kinds[f"{protocol}:{stream.kind}"] = kinds.get(f"{protocol}:{stream.kind}", 0) + 1
            await asyncio.sleep(0)
        during = await good
        await eventually(lambda: not gw.sessions and not gw.connections, 30)
        assert sum(gw.active.values()) == 0
        await eventually(lambda: vad_streams_in_triton(triton_server) == 0, 30)
    print(f"\n{sent} messages in {streams} streams ({bad} closed as bad): {kinds}")
    assert during == baseline or all(word_error_rate(b, d) <= 0.1 for b, d in zip(baseline, during)), \
        (baseline, during)
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text


async def _over_socket(url: str, frames: list, wait_s: float = 10.0) -> tuple[list[dict], bool]:
    transport, listener = await ws_connect(_Listener, url)
    for f in frames:
        if transport.is_disconnected:
            break
        if isinstance(f, bytes):
            transport.send(WSMsgType.BINARY, f)
        else:
            transport.send(WSMsgType.TEXT, f.encode("utf-8", "surrogatepass"))
    events, closed = [], False
    try:
        async with asyncio.timeout(wait_s):
            while (item := await listener.queue.get()) is not None:
                events.append(item[1])
            closed = True
    except TimeoutError:
        pass
    transport.disconnect()
    return events, closed


async def test_hostile_streams_over_real_sockets(triton_server):
    rng = random.Random(7)
    async with gateway(triton_server, pipelines={"asr": ASR}) as gw:
        max_b64 = R.max_append_b64(int(MAX_APPEND_S * 24000 * 2))
        for protocol in ("realtime", "native"):
            streams = [s for s in (fuzzkit.realtime_stream(rng, max_b64) if protocol == "realtime"
                                   else fuzzkit.native_stream(rng, gw.config.max_frame_bytes) for _ in range(400))
                       if s.bad is True][:150]
            path = f"/v1/realtime?intent=transcription" if protocol == "realtime" else STREAM_PATH
            results = await asyncio.gather(*[_over_socket(f"ws://127.0.0.1:{gw.port}{path}", s.frames)
                                             for s in streams])
            for stream, (events, closed) in zip(streams, results):
                errors = [e for e in events if e["type"] == "error"]
                assert closed and errors, (stream.kind, events)
                code = errors[-1]["error"]["code"] if protocol == "realtime" else errors[-1]["code"]
                assert code != P.E_INTERNAL
        await eventually(lambda: not gw.sessions and not gw.connections, 30)
        assert sum(gw.active.values()) == 0
