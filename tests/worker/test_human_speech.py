"""Real human recordings streamed through the real pipeline: the gateway, tritonserver (the
shared session fixture), Silero VAD and Whisper, WebSocket clients. Streamed Whisper
loops on short human utterances ("Rear Center, Rear Center"), where espeak speech
streams fine, so these assert on recorded speech with known words."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

import human_speech
import speech
from speechops_contract.api import parse_spec
from speechops_worker.client import stream_audio
from speechops_worker.gateway.server import Gateway, GatewayConfig

pytestmark = [pytest.mark.triton, pytest.mark.asyncio, pytest.mark.slow,
              pytest.mark.skipif(not human_speech.have_all(),
                                 reason="alsa-utils and asterisk-core-sounds-en-wav (scripts/install.sh)")]

FULL = parse_spec({"streams": {"partialInterval": "500ms"}, "stages": [
    {"name": "vad", "model": "silero_vad"},
    {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"], "fallbackModel": "whisper_asr_greedy"},
]})


@contextlib.asynccontextmanager
async def gateway(triton_url: str):
    # Full quality, every stream admitted and no request timed out, whatever the shared
    # machine's load: these measure words, not degradation, admission or latency.
    gw = Gateway(GatewayConfig(triton_url=triton_url, pipelines={"full": FULL}, degrade_after_s=1e9,
                               restore_below_s=1e9, load_admission=False, infer_timeout_s=120))
    await gw.start()
    try:
        yield f"ws://127.0.0.1:{gw.port}/v1/stream"
    finally:
        await gw.stop()


def padded(clip: human_speech.Clip) -> np.ndarray:
    return np.concatenate([speech.silence(0.5), clip.pcm16, speech.silence(1.0)])


async def stream_all(url: str, clips, concurrency: int = 4) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(clip):
        async with gate:
            result = await stream_audio(url, padded(clip), pipeline="full", speed=2.0)
        assert result.error is None, (clip.name, result.error)
        return result.transcript

    return await asyncio.gather(*[one(c) for c in clips])


async def test_streamed_human_speech_is_transcribed_once_and_right(triton_server):
    clips = human_speech.alsa_clips() + human_speech.asterisk_clips(
        human_speech.ASTERISK_SHORT + human_speech.ASTERISK_LONG[:8])
    async with gateway(triton_server.grpc_url) as url:
        texts = await stream_all(url, clips)
    repeated = {c.name: t for c, t in zip(clips, texts) if human_speech.repeated_phrase(t)}
    assert not repeated
    assert speech.wer([c.reference for c in clips], texts) <= 0.08, list(zip([c.name for c in clips], texts))


async def test_identical_concurrent_streams_get_identical_words(triton_server):
    # Eight streams of the same 9 s recording at once: their rows share requests in
    # every combination, and each must read the same.
    clip = human_speech.asterisk_clips(("tt-allbusy",))[0]
    async with gateway(triton_server.grpc_url) as url:
        results = await asyncio.gather(*[stream_audio(url, padded(clip), pipeline="full", speed=1.0)
                                         for _ in range(8)])
    texts = [r.transcript for r in results]
    assert all(r.error is None for r in results), [r.error for r in results]
    assert len({" ".join(speech.normalize_words(t)) for t in texts}) == 1, texts
    assert speech.wer(clip.reference, texts[0]) <= 0.15, texts[0]
