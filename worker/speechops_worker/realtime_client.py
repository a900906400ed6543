"""`speechops stream --protocol realtime`: stream a WAV over the OpenAI Realtime
transcription protocol, with the official `openai` SDK as the client, the way an app
that already ships on that SDK talks to speechops (only the base URL changes).

Needs the light client extra (`pip install 'speechops[client]'`), not torch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import soxr

from speechops_worker import audio_codec as C
from speechops_worker.client import ClientError

FORMATS = {"pcm": ("audio/pcm", 24000), "pcmu": ("audio/pcmu", 8000), "pcma": ("audio/pcma", 8000)}


@dataclass
class RealtimeResult:
    events: list[dict[str, Any]] = field(default_factory=list)   # each with "_recv" (s since the first append)
    audio_s: float = 0.0
    wall_s: float = 0.0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def transcript(self) -> str:
        done = self.of("conversation.item.input_audio_transcription.completed")
        return " ".join(e["transcript"].strip() for e in done if e["transcript"].strip())

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.of("error")]


def read_wav_any(path: str | Path) -> tuple[np.ndarray, int]:
    """A mono PCM16 WAV at any rate -> (int16 samples, rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth()) != (1, 2):
                raise ClientError(f"{path}: {w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit; send mono "
                                  f"16-bit PCM: sox {path} -c 1 -b 16 out.wav")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ClientError(f"{path}: not a PCM WAV file ({exc})") from None


def encode(pcm: np.ndarray, rate: int, fmt: str) -> bytes:
    """int16 samples at `rate` -> bytes in the session's format ("pcm", "pcmu", "pcma")."""
    wire_rate = FORMATS[fmt][1]
    if rate != wire_rate:
        pcm = soxr.resample(pcm, rate, wire_rate, quality="HQ")
    if fmt == "pcmu":
        return C.ulaw_encode(pcm)
    if fmt == "pcma":
        return C.alaw_encode(pcm)
    return pcm.astype("<i2").tobytes()


def session_config(fmt: str, turn_detection: dict[str, Any] | None | str = "server_vad",
                   model: str | None = None, prompt: str | None = None) -> dict[str, Any]:
    kind, rate = FORMATS[fmt]
    wire = {"type": kind, "rate": rate} if kind == "audio/pcm" else {"type": kind}
    td = {"type": "server_vad"} if turn_detection == "server_vad" else turn_detection
    transcription: dict[str, Any] = {}
    if model:
        transcription["model"] = model
    if prompt:
        transcription["prompt"] = prompt
    return {"type": "transcription", "audio": {"input": {"format": wire, "turn_detection": td,
                                                         "transcription": transcription}}}


def base_url(url: str) -> str:
    """ws(s)://HOST:PORT[/v1[/realtime]] -> the SDK's websocket_base_url (it appends /realtime)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ClientError(f"--url must start with ws:// or wss://, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/realtime"):
        path = path[: -len("/realtime")]
    return urlunsplit((parts.scheme, parts.netloc, path or "/v1", "", ""))


async def transcribe(url: str, audio: bytes, fmt: str = "pcm", *, api_key: str | None = None,
                     ca_file: str | None = None, turn_detection: dict[str, Any] | None | str = "server_vad",
                     model: str | None = None, prompt: str | None = None, frame_ms: int = 20, speed: float = 0.0,
                     on_event: Callable[[dict[str, Any]], None] | None = None, timeout_s: float = 120.0,
                     commit: bool = True) -> RealtimeResult:
    """Streams `audio` (already in `fmt`) as base64 appends of `frame_ms`, paced at `speed`x
    real time (0: as fast as the socket takes them), commits, and returns every event
    until each committed turn is transcribed (or an error ends the session)."""
    try:
        from openai import AsyncOpenAI
    except ImportError:
        raise ClientError("the realtime protocol's client is the openai SDK: pip install 'speechops[client]'") from None
    options: dict[str, Any] = {}
    if url.startswith("wss://"):
        options["ssl"] = ssl.create_default_context(cafile=ca_file)
    # The SDK insists on a key; a gateway without keys ignores it, and with no key given
    # none is sent (an empty Authorization header).
    client = AsyncOpenAI(api_key=api_key or "none", websocket_base_url=base_url(url), max_retries=0,
                         default_headers=None if api_key else {"Authorization": ""})
    kind, rate = FORMATS[fmt]
    bytes_per_frame = (rate * frame_ms // 1000) * (2 if kind == "audio/pcm" else 1)
    result = RealtimeResult(audio_s=len(audio) / (2 if kind == "audio/pcm" else 1) / rate)
    t0 = time.perf_counter()
    started: set[str] = set()
    committed: set[str] = set()
    finished: set[str] = set()
    sent_all = asyncio.Event()
    commit_answered = asyncio.Event()

    def note(doc: dict[str, Any]) -> None:
        doc["_recv"] = time.perf_counter() - t0
        result.events.append(doc)
        if on_event:
            on_event(doc)

    try:
        manager = client.realtime.connect(extra_query={"intent": "transcription"},
                                          websocket_connection_options=options)
        async with manager as conn:

            async def send() -> None:
                await conn.session.update(session=session_config(fmt, turn_detection, model, prompt))
                start = time.perf_counter()
                for i, offset in enumerate(range(0, len(audio), bytes_per_frame)):
                    if speed > 0:
                        delay = start + i * frame_ms / 1000 / speed - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif i % 16 == 0:
                        await asyncio.sleep(0)
                    chunk = audio[offset:offset + bytes_per_frame]
                    await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
                if commit:
                    await conn.input_audio_buffer.commit()
                sent_all.set()

            # Sending and receiving apart: a gateway that refuses the session closes it, and
            # its `error` is still there to read when a send has already failed.
            sender = asyncio.get_running_loop().create_task(send())
            deadline = time.monotonic() + timeout_s
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise asyncio.TimeoutError()
                    doc = json.loads(await asyncio.wait_for(conn.recv_bytes(), left))
                    note(doc)
                    kind_ = doc["type"]
                    if kind_ == "input_audio_buffer.speech_started":
                        started.add(doc["item_id"])
                    elif kind_ == "input_audio_buffer.committed":
                        committed.add(doc["item_id"])
                        if sent_all.is_set():
                            commit_answered.set()
                    elif kind_ in ("conversation.item.input_audio_transcription.completed",
                                   "conversation.item.input_audio_transcription.failed"):
                        finished.add(doc["item_id"])
                    elif kind_ == "error":
                        if doc["error"]["code"] == "input_audio_buffer_commit_empty" and sent_all.is_set():
                            commit_answered.set()
                        elif doc["error"]["code"] != "unsupported_event":
                            break          # the gateway ends the session after any other error
                    if (sent_all.is_set() and (commit_answered.is_set() or not commit)
                            and started <= committed and committed <= finished):
                        break
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    except (ClientError, asyncio.TimeoutError):
        raise
    except Exception as exc:        # the SDK's and websockets' own: connection refused, TLS, closed early
        if not (result.events and result.events[-1]["type"] == "error"):   # else the gateway said why
            raise ClientError(f"realtime session to {url} failed: {exc.__class__.__name__}: {exc}") from None
    finally:
        result.wall_s = time.perf_counter() - t0
        await client.close()
    return result
