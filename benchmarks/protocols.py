"""Protocol cost per frame: the OpenAI Realtime path (JSON + base64, resampled) against the native one (binary PCM16).

Prints, from one run:
  1. the protocol front alone, in this process (no socket, no Triton): CPU per 20 ms frame
     to turn what arrives into 16 kHz PCM16 chunks for VAD: native binary frame; realtime
     append of 24 kHz PCM16 (json.loads + base64 + 24 -> 16 kHz); of 8 kHz G.711 µ-law;
  2. the whole gateway process under load: N streams sending a 20 ms frame every 20 ms
     for S seconds to a VAD-only pipeline over the real tritonserver; the gateway
     process's CPU (psutil) per frame, per protocol, as a ratio against native.

Run:  PYTHONPATH=contract:operator:worker python benchmarks/protocols.py [--streams 100] [--seconds 10]

The load generator runs in this process and prepares every message before the clock
starts (base64 and JSON included), so its own cost is sending, not encoding. All three
processes share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import soxr
from picows import WSListener, WSMsgType, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import streaming  # noqa: E402  (the gateway + Triton stack, CPU accounting, the 20 ms clock)
from streaming import Stack, half_speech, ticks, tree_cpu  # noqa: E402

from speechops_worker import audio_codec as C  # noqa: E402
from speechops_worker.gateway import protocol as P  # noqa: E402
from speechops_worker.gateway import realtime as R  # noqa: E402
from speechops_worker.gateway.framing import Framer  # noqa: E402

MODES = {   # name -> (wire format for realtime, samples per 20 ms frame at its rate); None: native
    "native pcm16 16 kHz (binary)": (None, 320),
    "realtime audio/pcm 24 kHz": ("pcm", 480),
    "realtime audio/pcmu 8 kHz": ("pcmu", 160),
}


def frames_of(audio16k: np.ndarray, fmt: str | None, n: int) -> list[bytes]:
    """`n` wire messages of 20 ms each, looping the audio: binary PCM16 or append events."""
    if fmt is None:
        data = audio16k.astype("<i2").tobytes()
        step = 640
        return [data[(i * step) % (len(data) - step):][:step] for i in range(n)]
    wire = C.ulaw_encode(soxr.resample(audio16k, 16000, 8000)) if fmt == "pcmu" else \
        soxr.resample(audio16k, 16000, 24000).astype("<i2").tobytes()
    step = 160 if fmt == "pcmu" else 960
    out = []
    for i in range(n):
        chunk = wire[(i * step) % (len(wire) - step):][:step]
        out.append(json.dumps({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(chunk).decode()}).encode())
    return out


def front_cost(audio16k: np.ndarray, n: int = 20_000) -> dict[str, float]:
    """CPU seconds per frame to go from the wire message to VAD chunks, best of 3."""
    out = {}
    for name, (fmt, _) in MODES.items():
        msgs = frames_of(audio16k, fmt, n)
        best = float("inf")
        for _ in range(3):
            framer = Framer()
            decoder = C.Decoder(C.AudioFormat(*{"pcm": (C.PCM16, 24000), "pcmu": (C.PCMU, 8000)}[fmt])) if fmt else None
            t = time.process_time()
            for m in msgs:
                if decoder is None:
                    P.check_frame(len(m), 32_000)
                    framer.push(m)
                else:
                    cmd = R.parse_event(m, 480_000)
                    framer.push(decoder.push(cmd.audio))
            best = min(best, (time.process_time() - t) / n)
        out[name] = best
    return out


class _Quiet(WSListener):
    def __init__(self):
        self.errors = 0

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type == WSMsgType.TEXT and b'"error"' in frame.get_payload_as_bytes():
            self.errors += 1


async def load(stack: Stack, fmt: str | None, audios: list[np.ndarray], seconds: float) -> dict:
    base = stack.url.removesuffix("/v1/stream")
    per_stream = int(seconds / streaming.TICK) + 1
    streams = []
    for i, audio in enumerate(audios):
        msgs = frames_of(audio, fmt, per_stream)
        if fmt is None:
            transport, listener = await ws_connect(_Quiet, f"{base}/v1/stream")
            transport.send(WSMsgType.TEXT, json.dumps({"type": "start", "pipeline": "vad"}).encode())
            kind = WSMsgType.BINARY
        else:
            transport, listener = await ws_connect(_Quiet, f"{base}/v1/realtime?intent=transcription&model=vad")
            wire = {"type": "audio/pcm", "rate": 24000} if fmt == "pcm" else {"type": "audio/pcmu"}
            transport.send(WSMsgType.TEXT, json.dumps({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {"format": wire}}}}).encode())
            kind = WSMsgType.TEXT
        streams.append((transport, listener, msgs, kind))
        if i % 50 == 49:
            await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    cpu0, t0 = tree_cpu(stack.gateway.pid), time.perf_counter()
    sent = 0
    tick = 0
    async for _ in ticks(seconds):
        for transport, _, msgs, kind in streams:
            transport.send(kind, msgs[tick])
            sent += 1
        tick += 1
    await asyncio.sleep(0.5)                       # the last frames through VAD
    cpu = tree_cpu(stack.gateway.pid) - cpu0
    wall = time.perf_counter() - t0
    errors = sum(listener.errors for _, listener, _, _ in streams)
    for transport, *_ in streams:
        transport.disconnect(graceful=False)
    await asyncio.sleep(1.0)
    return {"frames": sent, "cpu_s": cpu, "us_per_frame": cpu / sent * 1e6, "gw_cores": cpu / wall, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    audios = half_speech(args.streams)

    print("1. protocol front alone (wire message -> VAD chunks), CPU per 20 ms frame, best of 3:")
    front = front_cost(audios[0])
    native = front["native pcm16 16 kHz (binary)"]
    for name, cost in front.items():
        print(f"   {name:<30} {cost * 1e6:7.1f} us   x{cost / native:5.1f} native")

    print(f"\n2. gateway process, {args.streams} streams x {args.seconds:g} s, VAD-only pipeline, real Triton; "
          f"the modes interleaved, {args.rounds} rounds (a shared machine is noisy), the median:")
    runs: dict[str, list[dict]] = {name: [] for name in MODES}
    with Stack(["silero_vad"]) as stack:
        for round_ in range(args.rounds):
            for name, (fmt, _) in MODES.items():
                r = asyncio.run(load(stack, fmt, audios, args.seconds))
                runs[name].append(r)
                print(f"   round {round_ + 1} {name:<30} {r['us_per_frame']:7.1f} us/frame  gateway "
                      f"{r['gw_cores']:.2f} cores  frames {r['frames']}  errors {r['errors']}", flush=True)
    median = {name: float(np.median([r["us_per_frame"] for r in rs])) for name, rs in runs.items()}
    native = median["native pcm16 16 kHz (binary)"]
    print()
    for name, value in median.items():
        print(f"   {name:<30} {value:7.1f} us/frame (median)   x{value / native:.2f} native")
    return 0 if all(r["errors"] == 0 for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("protocols", main))
