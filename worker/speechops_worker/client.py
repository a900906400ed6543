"""Streaming client: send a WAV to a gateway, receive partials and finals as they come.

`stream_audio()` is the library call (tests and the benchmark use it);
`speechops stream FILE.wav` is the command line. The protocol is described in
`speechops_worker.gateway`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

SAMPLE_RATE = 16000
DEFAULT_URL = "ws://127.0.0.1:8080/v1/stream"


class ClientError(RuntimeError):
    pass


@dataclass
class StreamResult:
    events: list[dict[str, Any]] = field(default_factory=list)    # each with "_recv" (s since first frame)
    send_times: list[float] = field(default_factory=list)          # per frame, s since first frame
    frame_samples: int = 320
    sample_rate: int = SAMPLE_RATE
    audio_s: float = 0.0
    wall_s: float = 0.0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return self.of("final")

    @property
    def partials(self) -> list[dict[str, Any]]:
        return self.of("partial")

    @property
    def transcript(self) -> str:
        return " ".join(e["text"] for e in self.finals if e["text"]).strip()

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of("error")
        return errors[0] if errors else None

    @property
    def closed_reason(self) -> str | None:
        closed = self.of("closed")
        return closed[0]["reason"] if closed else None

    def sent_at(self, audio_s: float) -> float:
        """When the frame holding audio time `audio_s` was sent (s since first frame)."""
        index = int(np.ceil(audio_s * self.sample_rate / self.frame_samples)) - 1
        return self.send_times[max(0, min(index, len(self.send_times) - 1))]

    def partial_latencies(self) -> list[float]:
        """Last audio of each partial sent by us -> partial received here."""
        return [e["_recv"] - self.sent_at(e["end_s"]) for e in self.partials]

    def final_latencies(self) -> list[float]:
        """End of speech (the last speech audio, per VAD) sent -> final received."""
        speech_end = {e["utterance"]: e["end_s"] for e in self.of("vad") if e.get("event") == "speech_end"}
        return [e["_recv"] - self.sent_at(speech_end.get(e["utterance"], e["end_s"])) for e in self.finals]


class _Listener(WSListener):
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.queue.put_nowait((time.perf_counter(), json.loads(frame.get_payload_as_utf8_text())))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        self.queue.put_nowait(None)


def read_wav(path: str | Path) -> np.ndarray:
    """A 16 kHz mono PCM16 WAV -> int16 samples; anything else is a clear error."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ClientError(
                    f"{path}: {w.getframerate()} Hz, {w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit; "
                    f"the gateway takes 16 kHz mono 16-bit PCM: sox {path} -r 16000 -c 1 -b 16 out.wav")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    except (wave.Error, EOFError) as exc:
        raise ClientError(f"{path}: not a PCM WAV file ({exc})") from None


async def stream_audio(url: str, pcm16: np.ndarray, *, pipeline: str | None = None, realtime: bool = True,
                       frame_ms: int = 20, options: dict[str, Any] | None = None,
                       on_event: Callable[[dict[str, Any]], None] | None = None,
                       timeout_s: float = 120.0, stop: bool = True, speed: float = 1.0,
                       sample_rate: int = SAMPLE_RATE, api_key: str | None = None,
                       ca_file: str | None = None) -> StreamResult:
    """Streams int16 samples at `sample_rate` as `frame_ms` frames (paced in real time
    unless `realtime` is False; `speed` 2 = twice real time), sends stop, and returns every
    event until `closed`. `api_key` goes as `Authorization: Bearer`; a wss:// URL is
    verified against `ca_file` (default: the system's CAs)."""
    start = {"type": "start", "sample_rate": sample_rate, "encoding": "pcm_s16le", "options": options or {}}
    if pipeline:
        start["pipeline"] = pipeline
    try:
        transport, listener = await ws_connect(
            _Listener, url, websocket_handshake_timeout=10,
            extra_headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            ssl_context=ssl.create_default_context(cafile=ca_file) if url.startswith("wss://") else None)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ClientError(f"no gateway at {url} ({exc}); start one with `speechops up PIPELINE.yaml`") from None
    frame = sample_rate * frame_ms // 1000
    result = StreamResult(frame_samples=frame, sample_rate=sample_rate, audio_s=len(pcm16) / sample_rate)
    data = np.asarray(pcm16, dtype="<i2").tobytes()
    t0 = time.perf_counter()
    done = asyncio.Event()

    async def receive() -> None:
        while True:
            item = await listener.queue.get()
            if item is None:
                break
            at, doc = item
            doc["_recv"] = at - t0
            result.events.append(doc)
            if on_event:
                on_event(doc)
            if doc["type"] == "closed":
                break
        done.set()

    receiver = asyncio.get_running_loop().create_task(receive())
    try:
        transport.send(WSMsgType.TEXT, json.dumps(start).encode())
        t0 = time.perf_counter()
        for i, offset in enumerate(range(0, len(data), frame * 2)):
            if done.is_set() or transport.is_disconnected:
                break
            if realtime:
                delay = t0 + i * frame_ms / 1000 / speed - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                # As fast as the gateway reads; keep our own buffer small.
                while transport.underlying_transport.get_write_buffer_size() > 256 * 1024 and not done.is_set():
                    await asyncio.sleep(0.005)
                if i % 8 == 0:
                    await asyncio.sleep(0)
            result.send_times.append(time.perf_counter() - t0)
            transport.send(WSMsgType.BINARY, data[offset:offset + frame * 2])
        if stop and not done.is_set() and not transport.is_disconnected:
            transport.send(WSMsgType.TEXT, b'{"type":"stop"}')
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        result.wall_s = time.perf_counter() - t0
        receiver.cancel()
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
    return result


# ------------------------------------------------------------------------- command line

def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (n={len(values)})"


class Printer:
    """Partials overwrite one line on a terminal; finals stay. Plain lines otherwise."""

    def __init__(self, out=None, show_partials: bool = True, raw: bool = False):
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.show_partials = show_partials
        self.raw = raw
        self._partial_shown = False

    def __call__(self, e: dict[str, Any]) -> None:
        if self.raw:
            print(json.dumps({k: v for k, v in e.items() if k != "_recv"}), file=self.out, flush=True)
            return
        kind = e["type"]
        span = f"[{e.get('start_s', 0):5.2f}-{e.get('end_s', 0):5.2f}s]"
        if kind == "partial" and self.show_partials:
            unstable = e["unstable"]
            if self.tty:
                tail = f" \033[2m{unstable}\033[0m" if unstable else ""
                self.out.write(f"\r\033[K  \033[2m...\033[0m     {span} {e['text']}{tail}")
                self._partial_shown = True
            else:
                print(f"  partial {span} {e['text']}" + (f" ({unstable})" if unstable else ""), file=self.out)
        elif kind == "final":
            self._clear()
            print(f"  final   {span} {e['text']}   ({e['server']['latency_ms']:.0f} ms after the pause was detected)",
                  file=self.out)
        elif kind in ("degraded", "restored"):
            self._clear()
            detail = "; ".join(e.get("changes", [])) or "full quality"
            print(f"  {kind} to level {e['level']}: {detail}", file=self.out)
        elif kind == "stage":
            self._clear()
            values = ", ".join(f"{k.lower()}={v}" for k, v in e["result"].items())
            print(f"  {e['stage']:<7} {span} {values}", file=self.out)
        elif kind == "error":
            self._clear()
            retry = f" (retry after {e['retry_after_s']:g}s)" if "retry_after_s" in e else ""
            print(f"  error: {e['code']}: {e['message']}{retry}", file=self.out)
        self.out.flush()

    def _clear(self) -> None:
        if self._partial_shown:
            self.out.write("\r\033[K")
            self._partial_shown = False


def summary(result: StreamResult) -> str:
    return "\n".join([
        f"{len(result.finals)} utterance(s), {len(result.partials)} partial(s), "
        f"{result.audio_s:.1f} s of audio streamed in {result.wall_s:.1f} s",
        f"partial latency (last audio sent -> partial): {_quantiles(result.partial_latencies())}",
        f"final latency (end of speech sent -> final):  {_quantiles(result.final_latencies())}",
    ])


def stream_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speechops stream", description="Stream a WAV file to a speechops gateway "
                                     "and print partial and final transcripts as they arrive.")
    parser.add_argument("file", help="16 kHz mono 16-bit PCM WAV")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--pipeline", help="pipeline name (default: the gateway's only pipeline)")
    parser.add_argument("--fast", action="store_true", help="send as fast as the gateway reads, not in real time")
    parser.add_argument("--frame-ms", type=int, default=20, help="audio per frame (default 20)")
    parser.add_argument("--no-partials", action="store_true", help="ask for finals only")
    parser.add_argument("--json", action="store_true", help="print every event as JSON")
    parser.add_argument("--protocol", choices=("native", "realtime"), default="native",
                        help="native (/v1/stream) or the OpenAI Realtime transcription protocol (/v1/realtime, "
                             "with the openai SDK)")
    parser.add_argument("--format", choices=("pcm", "pcmu", "pcma"), default="pcm",
                        help="realtime: the audio format sent (pcm = 24 kHz PCM16; pcmu/pcma = 8 kHz G.711)")
    parser.add_argument("--api-key", default=os.environ.get("SPEECHOPS_API_KEY"),
                        help="API key (default $SPEECHOPS_API_KEY; the variable keeps it out of `ps`)")
    parser.add_argument("--ca", help="CA certificate (PEM) that signed the gateway's certificate, for wss://")
    args = parser.parse_args(argv)
    if args.protocol == "realtime":
        return _stream_realtime(args)
    try:
        pcm = read_wav(args.file)
    except (ClientError, FileNotFoundError) as exc:
        print(f"speechops stream: {exc}", file=sys.stderr)
        return 2
    printer = Printer(show_partials=not args.no_partials, raw=args.json)
    try:
        result = asyncio.run(stream_audio(args.url, pcm, pipeline=args.pipeline, realtime=not args.fast,
                                          frame_ms=args.frame_ms, options={"partials": not args.no_partials},
                                          on_event=printer, api_key=args.api_key, ca_file=args.ca))
    except (ClientError, asyncio.TimeoutError) as exc:
        print(f"speechops stream: {exc or 'timed out waiting for the gateway'}", file=sys.stderr)
        return 1
    if not args.json:
        print(summary(result))
    return 1 if result.error else 0


def _stream_realtime(args) -> int:
    from speechops_worker import realtime_client as RC

    url = args.url if args.url != DEFAULT_URL else DEFAULT_URL.removesuffix("/stream")

    def show(e: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps({k: v for k, v in e.items() if k != "_recv"}), flush=True)
        elif e["type"] == "conversation.item.input_audio_transcription.completed":
            print(f"  final   {e['item_id']}: {e['transcript']}", flush=True)
        elif e["type"] == "conversation.item.input_audio_transcription.delta" and not args.no_partials:
            print(f"  delta   {e['item_id']}: {e['delta']}", flush=True)
        elif e["type"] == "error":
            err = e["error"]
            retry = f" (retry after {err['retry_after_s']:g}s)" if err.get("retry_after_s") else ""
            print(f"  error: {err['code']}: {err['message']}{retry}", flush=True)

    try:
        pcm, rate = RC.read_wav_any(args.file)
        audio = RC.encode(pcm, rate, args.format)
        result = asyncio.run(RC.transcribe(url, audio, args.format, api_key=args.api_key, ca_file=args.ca,
                                           frame_ms=args.frame_ms, speed=0.0 if args.fast else 1.0, on_event=show))
    except FileNotFoundError as exc:
        print(f"speechops stream: {exc}", file=sys.stderr)
        return 2
    except (RC.ClientError, asyncio.TimeoutError) as exc:
        print(f"speechops stream: {exc or 'timed out waiting for the gateway'}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{len(result.of('conversation.item.input_audio_transcription.completed'))} turn(s), "
              f"{result.audio_s:.1f} s of audio in {result.wall_s:.1f} s")
    return 1 if any(e["code"] != "input_audio_buffer_commit_empty" for e in result.errors) else 0
