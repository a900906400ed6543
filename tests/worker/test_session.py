"""A session on its own: driven through its interface (start / feed / commit / end) with
a scripted packer in place of Triton, its events collected from a sink. What runs against
the real models is in test_gateway_streams.py; this checks the session's own logic."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from speechops_contract.api import parse_spec
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.metrics import GatewayMetrics
from speechops_worker.gateway.pipeline import plan
from speechops_worker.gateway.segmenter import VadParams
from speechops_worker.gateway.session import Event, Limits, Session, SessionHost

SPEC = parse_spec({"streams": {"partialInterval": "200ms"}, "stages": [
    {"name": "vad", "model": "silero_vad"},
    {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"], "fallbackModel": "whisper_asr_greedy"},
    {"name": "levels", "model": "audio_stats", "optional": True}]})
LOUD, QUIET = 8000, 0


class ScriptedPacker:
    """Answers like the models would, from the audio itself: VAD says speech where the
    samples are loud; ASR returns how many seconds it heard; stats the peak."""

    def __init__(self, asr_delay_s: float = 0.0):
        self.asr_delay_s = asr_delay_s
        self.calls: list[tuple[str, dict, bool]] = []
        self.vad_rows_ended: list[int] = []
        self.in_flight: set[str] = set()
        self.overlapped = False

    def submit(self, model: str, part: dict, urgent: bool) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.calls.append((model, part, urgent))
        if model == "silero_vad":
            loud = np.abs(part["AUDIO"].astype(np.float32)).mean(axis=1) > 1000
            self.vad_rows_ended += [int(i) for i in part["STREAM_ID"][part["END"]]]
            loop.call_soon(lambda: fut.done() or fut.set_result({"PROB": np.where(loud, 0.95, 0.02)}))
            return fut
        self.in_flight.add(model)
        self.overlapped |= len(self.in_flight) > 1

        def answer():
            self.in_flight.discard(model)
            if fut.done():
                return
            if model == "audio_stats":
                fut.set_result({"PEAK": np.array([float(np.abs(part["AUDIO"]).max())])})
            else:
                heard = int(part["LENGTH"][0]) / 16000
                fut.set_result({"TEXT": np.array([f"heard {heard:.1f} seconds".encode()], dtype=object)})
        loop.call_later(self.asr_delay_s, answer)
        return fut


class Collect:
    def __init__(self):
        self.events: list[Event] = []
        self.closed: bool | None = None
        self.paused = 0

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def pause_input(self) -> None:
        self.paused += 1

    def resume_input(self) -> None:
        self.paused -= 1

    def close(self, error: bool) -> None:
        self.closed = error

    def of(self, kind: str) -> list[dict]:
        return [e.data for e in self.events if e.type == kind]


def make_session(packer: ScriptedPacker, **limits):
    closed = []
    metrics = GatewayMetrics("test")
    host = SessionHost(submit=packer.submit, metrics=metrics.pipeline, on_closed=closed.append,
                       limits=Limits(vad=VadParams(min_silence_chunks=4, min_speech_chunks=3), **limits))
    sink = Collect()
    return Session(host, 0x42, sink), sink, closed, metrics


def pcm(seconds: float, level: int) -> bytes:
    return np.full(int(seconds * 16000), level, np.int16).tobytes()


async def feed(session: Session, audio: bytes, frame: int = 640) -> None:
    """10x faster than real time: slow enough for partials (the scripted ASR answers
    in 20 ms) to come back while the utterance goes on."""
    for i in range(0, len(audio), frame):
        session.feed(audio[i:i + frame])
        await asyncio.sleep(0.002)


@pytest.mark.asyncio
async def test_a_spoken_stretch_becomes_one_utterance_with_its_final_and_stage_results():
    packer = ScriptedPacker(asr_delay_s=0.02)
    session, sink, closed, metrics = make_session(packer)
    session.start(plan("p", SPEC), P.StreamOptions())
    await feed(session, pcm(0.5, QUIET) + pcm(1.0, LOUD) + pcm(0.6, QUIET))
    session.end("stop")
    async with asyncio.timeout(5):
        while sink.closed is None:
            await asyncio.sleep(0.01)
    kinds = [e.type for e in sink.events]
    assert kinds[0] == "ready" and kinds[-1] == "closed" and sink.closed is False
    vad = sink.of("vad")
    assert [v["event"] for v in vad] == ["speech_start", "speech_end"]
    assert vad[0]["start_s"] == pytest.approx(0.5, abs=0.04) and vad[1]["end_s"] == pytest.approx(1.5, abs=0.04)
    [final] = sink.of("final")
    assert final["reason"] == "end_of_speech" and final["text"].startswith("heard 1.")
    [stats] = sink.of("stage")
    assert stats["stage"] == "levels" and stats["result"]["PEAK"] == round(LOUD / 32768, 4)
    assert packer.overlapped                           # asr and levels were in flight together
    assert sink.of("partial")                          # partials every 200 ms while speaking
    assert closed == [session] and packer.vad_rows_ended == [0x42]   # Triton's state freed
    text = metrics.render().decode()
    assert 'speechops_active_streams{namespace="test",pipeline="p"} 0.0' in text


@pytest.mark.asyncio
async def test_commit_ends_the_utterance_without_waiting_for_silence():
    session, sink, _, _ = make_session(ScriptedPacker())
    session.start(plan("p", SPEC), P.StreamOptions(partials=False))
    await feed(session, pcm(0.3, QUIET) + pcm(0.7, LOUD))
    session.commit()
    async with asyncio.timeout(5):
        while not sink.of("final"):
            await asyncio.sleep(0.01)
    assert sink.of("final")[0]["reason"] == "commit"
    await feed(session, pcm(0.5, LOUD) + pcm(0.5, QUIET))   # the stream goes on: a new utterance
    session.end("stop")
    async with asyncio.timeout(5):
        while sink.closed is None:
            await asyncio.sleep(0.01)
    assert [f["utterance"] for f in sink.of("final")] == [0, 1]


@pytest.mark.asyncio
async def test_degraded_stream_skips_optional_stages_and_uses_the_fallback_model():
    packer = ScriptedPacker()
    session, sink, _, _ = make_session(packer)
    session.start(plan("p", SPEC), P.StreamOptions(), level=2)
    assert [e.type for e in sink.events] == ["ready", "degraded"]
    assert "no partials" in sink.of("degraded")[0]["changes"]
    await feed(session, pcm(0.3, QUIET) + pcm(0.6, LOUD) + pcm(0.5, QUIET))
    session.end("stop")
    async with asyncio.timeout(5):
        while sink.closed is None:
            await asyncio.sleep(0.01)
    models = {m for m, _, _ in packer.calls}
    assert models == {"silero_vad", "whisper_asr_greedy"}
    assert sink.of("final")[0]["model"] == "whisper_asr_greedy" and not sink.of("partial")
    session.set_level(0)                               # closed: nothing more is said
    assert sink.events[-1].type == "closed"


@pytest.mark.asyncio
async def test_bad_frames_raise_and_fail_ends_the_stream_with_error_then_closed():
    session, sink, closed, metrics = make_session(ScriptedPacker())
    session.start(plan("p", SPEC), P.StreamOptions())
    with pytest.raises(P.ProtocolError) as err:
        session.feed(b"\x00" * 641)
    assert err.value.code == P.E_ODD_FRAME
    with pytest.raises(P.ProtocolError) as err:
        session.feed(b"\x00" * 40_000)
    assert err.value.code == P.E_FRAME_TOO_BIG
    session.fail(err.value.code, err.value.message)
    assert [e.type for e in sink.events][-2:] == ["error", "closed"] and sink.closed is True
    assert closed == [session]
    assert 'reason="frame_too_large"' in metrics.render().decode()


@pytest.mark.asyncio
async def test_input_pauses_while_vad_is_behind_and_resumes_once_it_catches_up():
    class Stalled(ScriptedPacker):
        def __init__(self):
            super().__init__()
            self.held: list = []

        def submit(self, model, part, urgent):
            fut = asyncio.get_running_loop().create_future()
            self.held.append((fut, len(part["AUDIO"])))
            return fut

    packer = Stalled()
    session, sink, _, _ = make_session(packer, max_queued_chunks=8)
    session.start(plan("p", SPEC), P.StreamOptions())
    for _ in range(40):                                  # 0.8 s while VAD never answers
        session.feed(pcm(0.02, QUIET))
    assert sink.paused == 1
    fut, rows = packer.held.pop(0)
    fut.set_result({"PROB": np.zeros(rows)})
    await asyncio.sleep(0)
    assert sink.paused == 1 and [rows for _, rows in packer.held] == [24]   # the queue went in one request
    fut, rows = packer.held.pop(0)
    fut.set_result({"PROB": np.zeros(rows)})
    await asyncio.sleep(0)
    assert sink.paused == 0 and session.backlog == 0
    session.release()
