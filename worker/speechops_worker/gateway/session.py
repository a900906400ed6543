"""One stream's state, from start to close, independent of the wire protocol.

Interface
=========
A protocol (the native `/v1/stream` WebSocket in `native.py`, or another) drives a
session and serializes what it says::

    session = Session(host, stream_id, sink)
    session.start(plan, options, level)   # emits `ready` (and `degraded` if level > 0)
    session.feed(pcm)                     # PCM16 little-endian bytes at 16 kHz, any whole samples
    session.commit()                      # end the current utterance now (its final follows)
    session.end("stop")                   # graceful: what was fed is transcribed, then `closed`
    session.fail(code, message)           # `error` + `closed` now
    session.release()                     # the client went away: free everything, say nothing

`host` (`SessionHost`) is all a session sees of the gateway: `submit` a part to a model's
packer, the pipeline's metric hooks, the limits, and `on_closed`. `sink` (`Sink`) is the
protocol's side: `emit(Event)` for every result, `pause_input`/`resume_input` for
backpressure, `close(error)` after the last event. Events are `Event(type, data)` with
the types and fields of the native protocol (the package docstring): ready, vad,
partial, final, stage, degraded, restored, error, closed.

Memory per stream is bounded: the framer's remainder (< 1 KB), the VAD chunks queued for
Triton (at most `max_queued_chunks`; beyond that input is paused), a ~320 ms pre-roll,
and the current utterance (at most streams.contextWindow of int16 audio; at the cap a
final is forced and the last words carry over as the prompt). Silero's RNN state lives
in Triton by stream id and is freed there by an END row when the stream closes.

VAD requests of one stream are serialised (the next is sent when the previous answered,
with all chunks that queued meanwhile, in time order), so Triton sees each stream's rows
in order while rows of many streams share one packed request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

import numpy as np

from speechops_contract.catalog import SAMPLE_RATE, VAD_CHUNK
from speechops_worker.gateway import degrade
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.framing import Framer
from speechops_worker.gateway.metrics import PipelineMetrics
from speechops_worker.gateway.pipeline import PipelinePlan, StagePlan, run_stages
from speechops_worker.gateway.segmenter import Segmenter, VadParams
from speechops_worker.gateway.transcript import AGREEMENT, extend_committed, final_text, tail_words, words

log = logging.getLogger("speechops.gateway")

_FALSE_ROW = np.zeros(1, dtype=bool)   # shared, never written: concatenation copies it
CARRY_WORDS = 12           # words of the last final carried as the next utterance's prompt
TRAILING_CHUNKS = 3        # ~100 ms of the closing silence kept for ASR


def seconds(chunk_index: int) -> float:
    return round(chunk_index * VAD_CHUNK / SAMPLE_RATE, 3)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any]


class Sink(Protocol):
    """The protocol side of a stream."""

    def emit(self, event: Event) -> None: ...

    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...

    def close(self, error: bool) -> None:
        """The session ended (after its last event); `error`: it ended with `error`."""


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 32_000      # 1 s of audio
    max_queued_chunks: int = 64        # ~2 s waiting for VAD, then input is paused
    vad: VadParams = VadParams()


@dataclass(frozen=True)
class SessionHost:
    """What a session may use of the gateway."""
    submit: Callable[[str, dict, bool], asyncio.Future]   # (model, part, urgent) -> outputs of the part
    metrics: Callable[[str], PipelineMetrics]             # pipeline -> its metric hooks
    on_closed: Callable[[Session], None]                  # once, when the session has released everything
    limits: Limits = Limits()


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
    def __init__(self, host: SessionHost, stream_id: int, sink: Sink):
        self.host = host
        self.sink = sink
        self.limits = host.limits
        self.stream_id = stream_id           # Triton's STREAM_ID for this stream
        self._id_row = np.array([stream_id], dtype=np.uint64)
        self.plan: PipelinePlan | None = None
        self.pipeline = ""                   # the plan's name once started
        self.metrics: PipelineMetrics | None = None
        self.options = P.StreamOptions()
        self.framer = Framer()
        self.segmenter = Segmenter(self.limits.vad)
        self.pre_roll: deque[np.ndarray] = deque(maxlen=self.limits.vad.pre_roll_chunks)
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
        self._commit_at: int | None = None   # cut the utterance once VAD reached this chunk
        self._commit_done: list[Callable[[bool], None]] = []   # told whether the commit cut a turn
        self._ignore_below = 0               # chunks before this were cleared: VAD state only
        self.manual_turns = False
        self.paused_input = False
        self.last_frame_at = time.monotonic()
        self.started_at = 0.0
        self._expected_next: float | None = None
        self._max_chunks = 0.0
        self._finals: asyncio.Task | None = None   # the newest final; finals are sent in order
        self._tasks: set[asyncio.Task] = set()
        self._requests: set[asyncio.Future] = set()

    # ---------------------------------------------------------------- the interface

    def start(self, plan: PipelinePlan, options: P.StreamOptions, level: int = 0, vad: VadParams | None = None,
              manual_turns: bool = False) -> None:
        """`vad`: this stream's segmentation (e.g. a protocol's turn detection settings);
        default the gateway's. `manual_turns`: the client ends every turn with `commit`
        (no VAD: all audio is the current turn)."""
        self.manual_turns = manual_turns
        if vad is not None:
            self.segmenter = Segmenter(vad)
            self.pre_roll = deque(maxlen=vad.pre_roll_chunks)
        self.plan = plan
        self.pipeline = plan.name
        self._max_chunks = plan.spec.streams.max_duration * SAMPLE_RATE / VAD_CHUNK
        self.options = options
        self.metrics = m = self.host.metrics(plan.name)
        m.active.inc()
        m.started.inc()
        m.level_moved(None, self.level)
        self.started_at = self.last_frame_at = time.monotonic()
        streams = plan.spec.streams
        self._emit("ready", pipeline=plan.name, stream=f"{self.stream_id:x}", sample_rate=SAMPLE_RATE,
                   chunk_samples=VAD_CHUNK, stages=[s.name for s in plan.spec.stages],
                   partial_interval_s=self.partial_interval(), context_window_s=streams.context_window,
                   max_duration_s=streams.max_duration, level=level)
        if level:
            self.set_level(level)

    def feed(self, pcm: bytes | memoryview) -> None:
        """Audio: PCM16 little-endian at 16 kHz. Raises ProtocolError on a bad frame.
        Runs for every frame of every stream, so it does as little as it can."""
        if self.stopping:
            self.frames_in += 1
            self.metrics.dropped("after_stop")
            return
        size = len(pcm)
        if size & 1 or size > self.limits.max_frame_bytes:
            P.check_frame(size, self.limits.max_frame_bytes)      # raises, naming the problem
        now = time.monotonic()
        self.frames_in += 1                  # added to the counter by flush_counters: cheaper per frame
        expected = self._expected_next
        if expected is not None and not self.frames_in & 7:
            self.metrics.jitter.observe(abs(now - expected))    # sampled, same reason
        self._expected_next = (now if expected is None or expected < now else expected) + size / (2 * SAMPLE_RATE)
        self.last_frame_at = now
        chunks = self.framer.push(pcm)
        if chunks is None:                   # no chunk completed: nothing new for VAD
            return
        arrival = time.time()
        queued = self.queued
        for chunk in chunks:
            queued.append((chunk, arrival))
        self.chunks_in += len(chunks)
        if self.chunks_in >= self._max_chunks:
            self.end("max_duration")
            return
        if len(self.queued) > self.limits.max_queued_chunks and not self.paused_input:
            # Triton is behind: stop reading this client; its transport pushes back.
            self.paused_input = True
            self.sink.pause_input()
        self._pump_vad()

    def commit(self, on_done: Callable[[bool], None] | None = None) -> None:
        """The audio fed so far ends the current utterance: its final follows (push to
        talk, or a protocol whose client decides turns). A partial 32 ms chunk is padded.
        `on_done(cut)` is called once VAD reached the commit: whether there was a turn to end."""
        if self.stopping or self.closed:
            return
        if on_done is not None:
            self._commit_done.append(on_done)
        for chunk in self.framer.flush():
            self.queued.append((chunk, time.time()))
            self.chunks_in += 1
        self._commit_at = self.chunks_in
        if self.chunks_done >= self._commit_at:
            self._cut_now("commit", time.time())
        self._pump_vad()

    def clear(self) -> None:
        """Drops the audio of the current turn: no final for it. Audio already on its way
        through VAD still advances VAD's state but starts no turn."""
        if self.stopping or self.closed:
            return
        self.framer = Framer()
        dropped = len(self.queued)
        self.queued.clear()
        self.chunks_in -= dropped
        self._ignore_below = self.chunks_in
        if self.utterance is not None:
            self.utterance.finalized = True      # an answer still in flight for it is not sent
        self.utterance = None
        self.segmenter.end()                     # not speaking: the next turn starts afresh
        self.pre_roll.clear()
        self._commit_at = None
        for done in self._commit_done:
            done(False)
        self._commit_done.clear()
        if self.paused_input:
            self.paused_input = False
            self.sink.resume_input()

    def set_prompt(self, prompt: str) -> None:
        """Vocabulary for the turns that follow."""
        self.options = replace(self.options, prompt=prompt)

    def end(self, reason: str) -> None:
        """Graceful end (stop, drain, max duration, idle): the audio already received is
        still transcribed, then `closed` is sent."""
        if self.stopping or self.closed or self.plan is None:
            return
        self.stopping = reason
        for chunk in self.framer.flush():
            self.queued.append((chunk, time.time()))
        if self.paused_input:
            self.paused_input = False
            self.sink.resume_input()
        self._pump_vad()

    def fail(self, code: str, message: str, reason: str | None = None, retry_after_s: float | None = None) -> None:
        """Ends the stream with an error event; other streams are untouched."""
        if self.closed:
            return
        self._emit("error", **P.error_fields(code, message, retry_after_s))
        self._emit("closed", reason=code)
        if self.metrics is not None:
            self.metrics.rejected(reason or code)
        self.release()
        self.sink.close(True)

    def cut_off(self, reason: str) -> None:
        """The client cannot be told (e.g. it does not read): count it and free everything."""
        if self.closed:
            return
        if self.metrics is not None:
            self.metrics.dropped(reason)
            self.metrics.rejected(reason)
        self.release()

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
        if self.metrics is not None:
            self.metrics.active.dec()
            self.metrics.level_moved(self.level, None)
        self.host.on_closed(self)

    def set_level(self, level: int) -> None:
        """The gateway's degradation level changed: apply it and tell the client."""
        if self.closed or self.plan is None or level == self.level:
            return
        self.metrics.level_moved(self.level, level)
        self.level = level
        kind, fields = degrade.notice(self.plan, level, self.partial_interval())
        self._emit(kind, **fields)

    def flush_counters(self) -> None:
        if self.metrics is not None and self.frames_in != self._frames_counted:
            self.metrics.frames_in.inc(self.frames_in - self._frames_counted)
            self._frames_counted = self.frames_in

    @property
    def backlog(self) -> int:
        """Chunks received and not yet through VAD."""
        return self.chunks_in - self.chunks_done

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
        if self.plan.vad is None or self.manual_turns:   # no VAD: every chunk is speech
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
        fut = self.host.submit(self.plan.vad.model, part, False)
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
            self.metrics.stage_latency(self.plan.vad.name, time.perf_counter() - sent)
        self._after_vad(batch, fut.result()["PROB"])
        if self.paused_input and len(self.queued) <= self.limits.max_queued_chunks // 2:
            self.paused_input = False
            self.sink.resume_input()
        self._pump_vad()

    def _send_vad_end(self) -> None:
        """Frees this stream's state in Triton; the answer is not needed."""
        if self.vad_started and not self.vad_ended and not self.vad_busy and self.plan and self.plan.vad:
            self.vad_ended = True
            part = {"AUDIO": np.zeros((1, VAD_CHUNK), np.int16), "STREAM_ID": self._id_row,
                    "START": np.array([False]), "END": np.array([True])}
            self.host.submit(self.plan.vad.model, part, False).add_done_callback(lambda f: f.cancelled() or f.exception())

    def _after_vad(self, batch: list, probs: np.ndarray) -> None:
        for (chunk, arrival), prob in zip(batch, probs):
            index = self.chunks_done
            self.chunks_done += 1
            if index < self._ignore_below:
                self.segmenter.step(0.0)     # cleared audio: counted, starts no turn
                continue
            if self.options.vad_probs:
                self._emit("vad", event="prob", prob=round(float(prob), 3), start_s=seconds(index),
                           end_s=seconds(index + 1))
            change = self.segmenter.step(float(prob))
            utt = self.utterance
            if change is not None and change.kind == "start":
                utt = self.utterance = Utterance(self.utterances, index - len(self.pre_roll), index,
                                                 list(self.pre_roll))
                self.utterances += 1
                self.pre_roll.clear()
                self._emit("vad", event="speech_start", utterance=utt.index, start_s=seconds(index),
                           end_s=seconds(index + 1))
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
            if self._commit_at is not None and self.chunks_done >= self._commit_at:
                self._cut_now("commit", arrival)

    def _cut_now(self, reason: str, decided_at: float) -> None:
        self._commit_at = None
        cut = self.utterance is not None
        callbacks, self._commit_done = self._commit_done, []
        for done in callbacks:
            done(cut)
        if not cut:
            return
        change = self.segmenter.end()
        if change is not None:
            self._speech_end(change.chunk, change.discard, decided_at, reason=reason)

    def _speech_end(self, last_speech_chunk: int, discard: bool, decided_at: float,
                    reason: str = "end_of_speech") -> None:
        utt, self.utterance = self.utterance, None
        self._emit("vad", event="speech_end", utterance=utt.index, start_s=seconds(utt.speech_chunk),
                   end_s=seconds(last_speech_chunk + 1), discarded=discard)
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
        return base * degrade.partial_factor(self.level)

    def _asr_stage(self) -> StagePlan | None:
        for wave in self.plan.waves:
            for s in wave:
                if s.kind == "asr":
                    return s
        return None

    def _prompt(self, stage: StagePlan) -> str:
        # Vocabulary first, then the last words heard (Whisper's previous-text context):
        # short utterances cut at pauses decode better with what came before.
        return " ".join(p for p in (stage.prompt, self.options.prompt, tail_words(self.last_text, CARRY_WORDS)) if p)

    def _maybe_partial(self, utt: Utterance) -> None:
        if (not self.options.partials or not degrade.partials_allowed(self.level) or utt.partial_busy
                or self.stopping):
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
        fut = self._submit_stage(stage, utt, upto, urgent=False)

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
            self.metrics.stage_latency(stage.name, time.perf_counter() - sent)
            decoded = words(f.result()["TEXT"][0].decode("utf-8", "replace"))
            utt.committed = extend_committed(utt.committed, utt.decodes, decoded)
            utt.decodes = utt.decodes[-(AGREEMENT - 2):] + [decoded] if AGREEMENT > 2 else [decoded]
            shown = (" ".join(utt.committed), " ".join(decoded[len(utt.committed):]))
            if shown != utt.shown:
                utt.shown = shown
                latency = time.time() - audio_arrival
                self.metrics.partial_latency.observe(latency)
                self._emit("partial", utterance=utt.index, text=shown[0], unstable=shown[1],
                           start_s=seconds(utt.first_chunk), end_s=utt.end_s(upto),
                           server={"latency_ms": round(latency * 1000, 1),
                                   "decode_ms": round((time.perf_counter() - sent) * 1000, 1)})
        fut.add_done_callback(done)

    def _submit_stage(self, stage: StagePlan, utt: Utterance, upto: int | None, urgent: bool) -> asyncio.Future:
        audio = utt.audio(upto)
        part = {"AUDIO": audio.reshape(1, -1), "LENGTH": np.array([len(audio)], np.int32)}
        if stage.kind == "asr":
            part["PROMPT"] = np.array([self._prompt(stage).encode()], dtype=object)
        fut = self.host.submit(degrade.model_for(stage, self.level), part, urgent)
        self._requests.add(fut)              # dropped when the stream ends while still queued
        fut.add_done_callback(self._requests.discard)
        return fut

    def _finalize(self, utt: Utterance, reason: str, decided_at: float) -> asyncio.Task:
        utt.finalized = True
        previous = self._finals
        task = self._finals = self._spawn(self._run_final(utt, reason, decided_at, previous))
        return task

    async def _run_final(self, utt: Utterance, reason: str, decided_at: float, previous: asyncio.Task | None) -> str:
        """Runs the utterance's stages (the pipeline's DAG), then sends the results in
        utterance order. Returns the final text."""
        level = self.level
        stages = tuple(s for w in self.plan.waves for s in w if degrade.runs(s, level))
        results = await run_stages(stages, lambda s: self._submit_stage(s, utt, None, urgent=True))
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        for name, (stage, out, took) in results.items():
            if isinstance(out, BaseException):
                self.fail(P.E_TRITON, f"stage {name!r} failed: {out}", reason="inference")
                return ""
            self.metrics.stage_latency(name, took)
        if self.closed:
            return ""
        text = ""
        span = {"utterance": utt.index, "start_s": seconds(utt.first_chunk), "end_s": utt.end_s()}
        for name, (stage, out, took) in results.items():
            if stage.kind == "asr":
                decoded = words(out["TEXT"][0].decode("utf-8", "replace"))
                text = final_text(utt.committed, decoded)
                self.last_text = text
                latency = time.time() - decided_at
                self.metrics.final_latency(latency)
                self._emit("final", text=text, reason=reason, stage=name, model=degrade.model_for(stage, level), **span,
                           server={"latency_ms": round(latency * 1000, 1), "decode_ms": round(took * 1000, 1)})
            else:
                values = {k: round(float(v[0]), 4) for k, v in out.items()}
                self._emit("stage", stage=name, model=stage.model, result=values, **span,
                           server={"decode_ms": round(took * 1000, 1)})
        return text

    # ---------------------------------------------------------------- ending

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
            self._emit("closed", reason=self.stopping, audio_s=seconds(self.chunks_done))
            self.release()
            self.sink.close(False)

    # ---------------------------------------------------------------- output

    def _emit(self, kind: str, **data: Any) -> None:
        if not self.closed:
            self.sink.emit(Event(kind, data))
            if self.metrics is not None:
                self.metrics.frames_out.inc()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
