"""One stream's state, from `start` to `closed`. It dies with the stream.

Memory per stream is bounded: the framer's remainder (< 1 KB), the VAD chunks queued for
Triton (at most `max_queued_chunks`; beyond that the socket stops being read), a ~320 ms
pre-roll, and the current utterance (at most streams.contextWindow of int16 audio; at the
cap a final is forced and the last words carry over as the prompt). Silero's RNN state
lives in Triton by stream id and is freed there by an END row when the stream closes.

VAD requests of one stream are serialised (the next is sent when the previous answered,
with all chunks that queued meanwhile, in time order), so Triton sees each stream's rows
in order while rows of many streams share one packed request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from picows import WSCloseCode, WSMsgType

from speechops_contract.catalog import SAMPLE_RATE, VAD_CHUNK
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.framing import Framer
from speechops_worker.gateway.pipeline import PipelinePlan, StagePlan
from speechops_worker.gateway.segmenter import Segmenter
from speechops_worker.gateway.transcript import AGREEMENT, extend_committed, final_text, tail_words, words

if TYPE_CHECKING:
    from picows import WSTransport

    from speechops_worker.gateway.server import Gateway

log = logging.getLogger("speechops.gateway")

_FALSE_ROW = np.zeros(1, dtype=bool)   # shared, never written: concatenation copies it
CARRY_WORDS = 12           # words of the last final carried as the next utterance's prompt
TRAILING_CHUNKS = 3        # ~100 ms of the closing silence kept for ASR


def seconds(chunk_index: int) -> float:
    return round(chunk_index * VAD_CHUNK / SAMPLE_RATE, 3)


@dataclass
class Utterance:
    index: int
    first_chunk: int                    # stream chunk index of chunks[0] (pre-roll included)
    speech_chunk: int = 0               # chunk where VAD detected the start of speech
    chunks: list[np.ndarray] = field(default_factory=list)   # int16 [512] each
    last_arrival: float = 0.0           # wall time the newest chunk reached the gateway
    committed: list[str] = field(default_factory=list)
    decodes: list[list[str]] = field(default_factory=list)   # the last few partial decodes
    shown: tuple[str, str] = ("", "")
    partial_at_chunks: int = 0          # chunks in the utterance when the last partial was asked
    partial_busy: bool = False
    finalized: bool = False

    def audio(self, upto_chunks: int | None = None) -> np.ndarray:
        pcm = np.concatenate(self.chunks[:upto_chunks])
        return pcm.astype(np.float32) / 32768.0

    def end_s(self, upto_chunks: int | None = None) -> float:
        n = len(self.chunks) if upto_chunks is None else upto_chunks
        return seconds(self.first_chunk + n)


class Session:
    def __init__(self, gateway: Gateway, transport: WSTransport, stream_id: int):
        self.gw = gateway
        self.transport = transport
        self.stream_id = stream_id           # Triton's STREAM_ID for this stream
        self._id_row = np.array([stream_id], dtype=np.uint64)
        self.plan: PipelinePlan | None = None
        self.options = P.StreamOptions()
        self.framer = Framer()
        self.segmenter = Segmenter(gateway.config.vad)
        self.pre_roll: deque[np.ndarray] = deque(maxlen=gateway.config.vad.pre_roll_chunks)
        self.queued: deque[tuple[np.ndarray, float]] = deque()   # (chunk, arrival) waiting for VAD
        self.chunks_in = 0                   # chunks framed so far
        self.frames_in = 0
        self._frames_counted = 0
        self.chunks_done = 0                 # chunks through VAD
        self.vad_busy = False
        self.vad_started = False             # START sent to Triton
        self.vad_ended = False               # END sent (or never needed)
        self.utterance: Utterance | None = None
        self.utterances = 0
        self.last_text = ""                  # the last final: the next utterance's prompt
        self.level = 0                       # degradation level this stream was last told
        self.stopping: str | None = None     # reason the stream is finishing
        self.closed = False
        self._winding = False
        self.paused_reading = False
        self.last_frame_at = time.monotonic()
        self.started_at = 0.0
        self._expected_next: float | None = None
        self._finals: asyncio.Task | None = None   # the newest final; finals are sent in order
        self._tasks: set[asyncio.Task] = set()
        self._requests: set[asyncio.Future] = set()
        self._labels: dict = {}

    # ---------------------------------------------------------------- client input

    def on_text(self, text: str) -> None:
        doc = P.parse_control(text)
        if doc["type"] == "start":
            if self.plan is not None:
                raise P.ProtocolError(P.E_ALREADY_STARTED, "the stream has already started; open a new connection")
            self._start(P.parse_start(doc, self.gw.plans, self.gw.config.default_pipeline))
        else:
            if self.plan is None:
                raise P.ProtocolError(P.E_NOT_STARTED, 'send {"type": "start", ...} before "stop"')
            self.finish("stop")

    def _start(self, req: P.StartRequest) -> None:
        self.gw.admit(req.pipeline)          # raises ProtocolError when refused
        self.plan = self.gw.plans[req.pipeline]
        self.options = req.options
        m, lbl = self.gw.metrics, (self.gw.metrics.namespace, req.pipeline)
        self._labels = {
            "frames_in": m.frames.labels(*lbl, "in"), "frames_out": m.frames.labels(*lbl, "out"),
            "jitter": m.jitter.labels(*lbl), "partial": m.partial_latency.labels(*lbl),
            "final": m.final_latency.labels(*lbl),
        }
        m.active_streams.labels(*lbl).inc()
        m.streams_started.labels(*lbl).inc()
        self.gw.level_gauge(req.pipeline, self.level, +1)
        self.started_at = time.monotonic()
        streams = self.plan.spec.streams
        self.send(P.event(
            "ready", pipeline=req.pipeline, stream=f"{self.stream_id:x}", sample_rate=SAMPLE_RATE, chunk_samples=VAD_CHUNK,
            stages=[s.name for s in self.plan.spec.stages], partial_interval_s=self.partial_interval(),
            context_window_s=streams.context_window, max_duration_s=streams.max_duration, level=self.gw.level))
        if self.gw.level:
            self.set_level(self.gw.level)

    def on_audio(self, pcm: bytes) -> None:
        if self.plan is None:
            raise P.ProtocolError(P.E_NOT_STARTED, 'send {"type": "start", ...} before audio frames')
        if self.stopping:
            self.frames_in += 1
            self.gw.metrics.dropped.labels(self.gw.metrics.namespace, self.plan.name, "after_stop").inc()
            return
        P.check_frame(len(pcm), self.gw.config.max_frame_bytes)
        now = time.monotonic()
        self.frames_in += 1                  # added to the counter by the sweep: cheaper per frame
        if self.frames_in % 8 == 0 and self._expected_next is not None:
            self._labels["jitter"].observe(abs(now - self._expected_next))   # sampled, same reason
        self._expected_next = max(now, self._expected_next or now) + len(pcm) / 2 / SAMPLE_RATE
        self.last_frame_at = now
        arrival = time.time()
        for chunk in self.framer.push(pcm):
            self.queued.append((chunk, arrival))
            self.chunks_in += 1
        if self.chunks_in * VAD_CHUNK >= self.plan.spec.streams.max_duration * SAMPLE_RATE:
            self.finish("max_duration")
            return
        if len(self.queued) > self.gw.config.max_queued_chunks and not self.paused_reading:
            # Triton is behind: stop reading this socket; TCP pushes back on the client.
            self.paused_reading = True
            self.transport.underlying_transport.pause_reading()
        self._pump_vad()

    # ---------------------------------------------------------------- VAD

    def _pump_vad(self) -> None:
        if self.vad_busy:
            return
        if self.closed:
            self._send_vad_end()
            return
        if not self.queued:
            if self.stopping and not self._winding:
                self._winding = True
                self._spawn(self._wind_up())
            return
        if self.plan.vad is None:           # no VAD stage: every chunk is speech
            batch = [self.queued.popleft() for _ in range(len(self.queued))]
            self._after_vad(batch, np.ones(len(batch), dtype=np.float32))
            self._pump_vad()
            return
        n = min(len(self.queued), 64)
        batch = [self.queued.popleft() for _ in range(n)]
        last = bool(self.stopping) and not self.queued
        if n == 1 and self.vad_started and not last:
            # The common case, kept cheap: int16 rows go as they are; the packer converts
            # the whole packed request to float once (VAD_PREPARE).
            part = {"AUDIO": batch[0][0].reshape(1, VAD_CHUNK), "STREAM_ID": self._id_row,
                    "START": _FALSE_ROW, "END": _FALSE_ROW}
        else:
            start = np.zeros(n, dtype=bool)
            end = np.zeros(n, dtype=bool)
            start[0] = not self.vad_started
            if last:
                end[-1] = True
                self.vad_ended = True
            part = {"AUDIO": np.stack([c for c, _ in batch]), "STREAM_ID": np.full(n, self.stream_id, dtype=np.uint64),
                    "START": start, "END": end}
        self.vad_started = True
        self.vad_busy = True
        sent = time.perf_counter()
        fut = self.gw.packers[self.plan.vad.model].submit(part)
        fut.add_done_callback(lambda f: self._on_vad(f, batch, sent))

    def _on_vad(self, fut: asyncio.Future, batch: list, sent: float) -> None:
        self.vad_busy = False
        if self.closed:
            self._send_vad_end()
            return
        exc = fut.exception()
        if exc is not None:
            self.fail(P.E_TRITON, f"voice activity detection failed: {exc}", reason="inference")
            return
        if self.chunks_done % 8 == 0:        # sampled: one histogram update per ~256 ms of audio
            self.gw.stage_latency(self.plan.name, self.plan.vad.name, time.perf_counter() - sent)
        self._after_vad(batch, fut.result()["PROB"])
        if self.paused_reading and len(self.queued) <= self.gw.config.max_queued_chunks // 2:
            self.paused_reading = False
            self.transport.underlying_transport.resume_reading()
        self._pump_vad()

    def _send_vad_end(self) -> None:
        """Frees this stream's state in Triton; the answer is not needed."""
        if self.vad_started and not self.vad_ended and not self.vad_busy and self.plan and self.plan.vad:
            self.vad_ended = True
            part = {"AUDIO": np.zeros((1, VAD_CHUNK), np.int16), "STREAM_ID": self._id_row,
                    "START": np.array([False]), "END": np.array([True])}
            self.gw.packers[self.plan.vad.model].submit(part).add_done_callback(lambda f: f.exception())

    def _after_vad(self, batch: list, probs: np.ndarray) -> None:
        for (chunk, arrival), prob in zip(batch, probs):
            index = self.chunks_done
            self.chunks_done += 1
            if self.options.vad_probs:
                self.send(P.event("vad", event="prob", prob=round(float(prob), 3), start_s=seconds(index),
                                  end_s=seconds(index + 1)))
            change = self.segmenter.step(float(prob))
            utt = self.utterance
            if change is not None and change.kind == "start":
                utt = self.utterance = Utterance(self.utterances, index - len(self.pre_roll), index,
                                                 list(self.pre_roll))
                self.utterances += 1
                self.pre_roll.clear()
                self.send(P.event("vad", event="speech_start", utterance=utt.index, start_s=seconds(index),
                                  end_s=seconds(index + 1)))
            if utt is not None:
                utt.chunks.append(chunk)
                utt.last_arrival = arrival
            else:
                self.pre_roll.append(chunk)
            if change is not None and change.kind == "end":
                self._speech_end(change.chunk, change.discard, arrival)
            elif utt is not None:
                if len(utt.chunks) * VAD_CHUNK >= self.plan.spec.streams.context_window * SAMPLE_RATE:
                    self._cut_at_context_window(arrival)
                else:
                    self._maybe_partial(utt)

    def _speech_end(self, last_speech_chunk: int, discard: bool, decided_at: float,
                    reason: str = "end_of_speech") -> None:
        utt, self.utterance = self.utterance, None
        self.send(P.event("vad", event="speech_end", utterance=utt.index, start_s=seconds(utt.speech_chunk),
                          end_s=seconds(last_speech_chunk + 1), discarded=discard))
        if discard:
            return
        keep = last_speech_chunk + 1 + TRAILING_CHUNKS - utt.first_chunk
        del utt.chunks[keep:]
        self._finalize(utt, reason, decided_at)

    def _cut_at_context_window(self, decided_at: float) -> None:
        """The utterance reached streams.contextWindow: final now, keep listening, carry
        the last words as the next utterance's prompt (bounded memory, kept context)."""
        utt = self.utterance
        nxt = Utterance(self.utterances, utt.first_chunk + len(utt.chunks), utt.first_chunk + len(utt.chunks))
        self.utterances += 1
        self.utterance = nxt
        self._finalize(utt, "context_window", decided_at)

    # ---------------------------------------------------------------- ASR and other stages

    def partial_interval(self) -> float:
        base = self.options.partial_interval_s or self.plan.spec.streams.partial_interval
        return base * (2 if self.level >= 1 else 1)

    def _asr_stage(self) -> StagePlan | None:
        for wave in self.plan.waves:
            for s in wave:
                if s.kind == "asr":
                    return s
        return None

    def _model_for(self, stage: StagePlan) -> str:
        return stage.fallback_model if self.level >= 2 and stage.fallback_model else stage.model

    def _prompt(self, stage: StagePlan, utt: Utterance) -> str:
        # Vocabulary first, then the last words heard (Whisper's previous-text context):
        # short utterances cut at pauses decode better with what came before.
        return " ".join(p for p in (stage.prompt, self.options.prompt, tail_words(self.last_text, CARRY_WORDS)) if p)

    def _maybe_partial(self, utt: Utterance) -> None:
        if not self.options.partials or self.level >= 2 or utt.partial_busy or self.stopping:
            return
        stage = self._asr_stage()
        if stage is None:
            return
        interval_chunks = self.partial_interval() * SAMPLE_RATE / VAD_CHUNK
        if len(utt.chunks) - utt.partial_at_chunks < interval_chunks:
            return
        upto = len(utt.chunks)
        utt.partial_at_chunks = upto
        utt.partial_busy = True
        audio_arrival = utt.last_arrival
        sent = time.perf_counter()
        fut = self._submit_asr(stage, utt, upto, urgent=False)

        def done(f: asyncio.Future) -> None:
            utt.partial_busy = False
            if f.cancelled():
                return
            if self.closed or utt.finalized:
                f.exception()
                return
            if f.exception() is not None:
                self.fail(P.E_TRITON, f"speech recognition failed: {f.exception()}", reason="inference")
                return
            self.gw.stage_latency(self.plan.name, stage.name, time.perf_counter() - sent)
            decoded = words(f.result()["TEXT"][0].decode("utf-8", "replace"))
            utt.committed = extend_committed(utt.committed, utt.decodes, decoded)
            utt.decodes = utt.decodes[-(AGREEMENT - 2):] + [decoded] if AGREEMENT > 2 else [decoded]
            shown = (" ".join(utt.committed), " ".join(decoded[len(utt.committed):]))
            if shown != utt.shown:
                utt.shown = shown
                latency = time.time() - audio_arrival
                self._labels["partial"].observe(latency)
                self.send(P.event("partial", utterance=utt.index, text=shown[0], unstable=shown[1],
                                  start_s=seconds(utt.first_chunk), end_s=utt.end_s(upto),
                                  server={"latency_ms": round(latency * 1000, 1),
                                          "decode_ms": round((time.perf_counter() - sent) * 1000, 1)}))
        fut.add_done_callback(done)

    def _submit_asr(self, stage: StagePlan, utt: Utterance, upto: int | None, urgent: bool) -> asyncio.Future:
        audio = utt.audio(upto)
        part = {"AUDIO": audio.reshape(1, -1), "LENGTH": np.array([len(audio)], np.int32),
                "PROMPT": np.array([self._prompt(stage, utt).encode()], dtype=object)}
        return self._track(self.gw.packers[self._model_for(stage)].submit(part, urgent=urgent))

    def _finalize(self, utt: Utterance, reason: str, decided_at: float) -> asyncio.Task:
        utt.finalized = True
        previous = self._finals
        task = self._finals = self._spawn(self._run_final(utt, reason, decided_at, previous))
        return task

    async def _run_final(self, utt: Utterance, reason: str, decided_at: float, previous: asyncio.Task | None) -> str:
        """Runs the utterance stages wave by wave (a wave's stages concurrently), then
        sends the results in utterance order. Returns the final text."""
        results: dict[str, tuple[StagePlan, dict, float]] = {}
        for wave in self.plan.waves:
            stages = [s for s in wave if not (s.optional and self.level >= 1)]
            sent = time.perf_counter()
            futures = []
            for s in stages:
                if s.kind == "asr":
                    futures.append(self._submit_asr(s, utt, None, urgent=True))
                else:
                    audio = utt.audio()
                    futures.append(self._track(self.gw.packers[self._model_for(s)].submit(
                        {"AUDIO": audio.reshape(1, -1), "LENGTH": np.array([len(audio)], np.int32)}, urgent=True)))
            outs = await asyncio.gather(*futures, return_exceptions=True)
            for s, out in zip(stages, outs):
                if isinstance(out, BaseException):
                    if previous is not None:
                        await asyncio.gather(previous, return_exceptions=True)
                    self.fail(P.E_TRITON, f"stage {s.name!r} failed: {out}", reason="inference")
                    return ""
                took = time.perf_counter() - sent
                self.gw.stage_latency(self.plan.name, s.name, took)
                results[s.name] = (s, out, took)
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if self.closed:
            return ""
        text = ""
        for name, (stage, out, took) in results.items():
            span = {"utterance": utt.index, "start_s": seconds(utt.first_chunk), "end_s": utt.end_s()}
            if stage.kind == "asr":
                decoded = words(out["TEXT"][0].decode("utf-8", "replace"))
                text = final_text(utt.committed, decoded)
                self.last_text = text
                latency = time.time() - decided_at
                self._labels["final"].observe(latency)
                self.send(P.event("final", text=text, reason=reason, stage=name, model=self._model_for(stage), **span,
                                  server={"latency_ms": round(latency * 1000, 1), "decode_ms": round(took * 1000, 1)}))
            else:
                values = {k: round(float(v[0]), 4) for k, v in out.items()}
                self.send(P.event("stage", stage=name, model=stage.model, result=values, **span,
                                  server={"decode_ms": round(took * 1000, 1)}))
        return text

    # ---------------------------------------------------------------- degradation

    def set_level(self, level: int) -> None:
        if self.closed or self.plan is None or level == self.level:
            return
        self.gw.level_gauge(self.plan.name, self.level, -1)
        self.gw.level_gauge(self.plan.name, level, +1)
        self.level = level
        if level == 0:
            self.send(P.event("restored", level=0, partial_interval_s=self.partial_interval()))
            return
        changes = [f"partials every {self.partial_interval():g}s" if level == 1 else "no partials"]
        skipped = [s.name for w in self.plan.waves for s in w if s.optional]
        if skipped:
            changes.append(f"optional stages skipped: {', '.join(skipped)}")
        if level >= 2:
            changes += [f"{s.name} uses {s.fallback_model}" for w in self.plan.waves for s in w if s.fallback_model]
        self.send(P.event("degraded", level=level, reason="gateway overloaded", changes=changes))

    # ---------------------------------------------------------------- ending

    def finish(self, reason: str) -> None:
        """Graceful end (stop, drain, max duration, idle): the audio already received is
        still transcribed, then `closed` is sent."""
        if self.stopping or self.closed or self.plan is None:
            return
        self.stopping = reason
        for chunk in self.framer.flush():
            self.queued.append((chunk, time.time()))
        if self.paused_reading:
            self.paused_reading = False
            self.transport.underlying_transport.resume_reading()
        self._pump_vad()

    async def _wind_up(self) -> None:
        if self.closed:
            return
        self._send_vad_end()
        change = self.segmenter.end()
        if change is not None and self.utterance is not None:
            self._speech_end(change.chunk, change.discard, time.time(), reason=self.stopping)
        if self._finals is not None:
            await asyncio.gather(self._finals, return_exceptions=True)
        if not self.closed:
            self.send(P.event("closed", reason=self.stopping, audio_s=seconds(self.chunks_done)))
            self.release()
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()

    def fail(self, code: str, message: str, reason: str | None = None, retry_after_s: float | None = None) -> None:
        """Ends the stream with an error event; other streams are untouched."""
        if self.closed:
            return
        self.send(P.error_event(code, message, retry_after_s))
        self.send(P.event("closed", reason=code))
        self.gw.metrics.rejected.labels(self.gw.metrics.namespace, self.plan.name if self.plan else "", reason or code).inc()
        self.release()
        self.transport.send_close(WSCloseCode.POLICY_VIOLATION)
        self.transport.disconnect()

    def release(self) -> None:
        """Frees everything this stream holds, here and in Triton. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.queued.clear()
        for fut in list(self._requests):
            fut.cancel()                     # the packer skips cancelled rows it has not sent
        self.utterance = None
        self.pre_roll.clear()
        self._send_vad_end()
        self.flush_counters()
        if self.plan is not None:
            lbl = (self.gw.metrics.namespace, self.plan.name)
            self.gw.metrics.active_streams.labels(*lbl).dec()
            self.gw.level_gauge(self.plan.name, self.level, -1)
        self.gw.forget(self)

    # ---------------------------------------------------------------- output

    def send(self, data: bytes) -> None:
        """Sends one event; a client that stops reading is cut off, never buffered forever."""
        if self.closed or self.transport.is_disconnected:
            return
        self.transport.send(WSMsgType.TEXT, data)
        if self._labels:
            self._labels["frames_out"].inc()
        if self.transport.underlying_transport.get_write_buffer_size() > self.gw.config.send_buffer_limit:
            self.slow_consumer()

    def slow_consumer(self) -> None:
        if self.closed:
            return
        if self.plan is not None:
            self.gw.metrics.dropped.labels(self.gw.metrics.namespace, self.plan.name, "slow_consumer").inc()
        log.warning("stream %x: client is not reading its events; closing it", self.stream_id)
        # The error cannot reach a client that does not read; it is logged and counted.
        self.gw.metrics.rejected.labels(self.gw.metrics.namespace, self.plan.name if self.plan else "", "slow_consumer").inc()
        self.release()
        self.transport.disconnect(graceful=False)

    def flush_counters(self) -> None:
        if self._labels and self.frames_in != self._frames_counted:
            self._labels["frames_in"].inc(self.frames_in - self._frames_counted)
            self._frames_counted = self.frames_in

    def _track(self, fut: asyncio.Future) -> asyncio.Future:
        """Utterance requests still queued in the gateway are dropped when the stream ends."""
        self._requests.add(fut)
        fut.add_done_callback(self._requests.discard)
        return fut

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
