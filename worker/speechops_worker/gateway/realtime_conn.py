"""The OpenAI Realtime transcription protocol (`/v1/realtime?intent=transcription`) over picows.

One `RealtimeConnection` per WebSocket, beside the native protocol's `NativeConnection`
on the same gateway (`native.Streams`): same sessions, stages, degradation, drain and
metrics. It parses client events with `realtime.parse_event`, decodes the session's
audio format to 16 kHz PCM16 (`audio_codec`), and turns the session's events into the
protocol's: a turn (utterance) is an item; VAD's speech start/end become
`input_audio_buffer.speech_started`/`speech_stopped` + `committed`; partials' stable
words become `...input_audio_transcription.delta`s and finals `.completed`.

The session starts (and is admitted) at the first audio, when its pipeline, format and
turn detection are known; whether the gateway would admit one is checked at connect
too, so a full or draining replica says so before the client sends audio.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from picows import WSMsgType

from speechops_worker.audio_codec import CodecError, Decoder
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway import realtime as R
from speechops_worker.gateway.connection import Connection
from speechops_worker.gateway.session import Event

log = logging.getLogger("speechops.gateway")

MAX_APPEND_S = 10.0        # audio in one append (24 kHz PCM16: 640 KB of base64, under MAX_WS_FRAME)
# Why a session ended, as the protocol's error codes: a client learns why the socket closed.
END_CODES = {"drain": P.E_DRAINING, "idle_timeout": "idle_timeout", "max_duration": "max_duration"}
RETRY_AFTER = {"drain": 1.0}
SERVER_CODES = {P.E_OVER_CAPACITY, P.E_DRAINING, P.E_TRITON, P.E_INTERNAL, P.E_SLOW_CONSUMER}


class RealtimeConnection(Connection):
    def __init__(self, streams):
        super().__init__(streams)
        self.query_model: str | None = None
        self.config = R.default_config(streams.config.vad)
        self.decoder: Decoder | None = None
        self.items = R.Items("")
        self.item_of: dict[int, str] = {}      # utterance index -> item id
        self.sent_text: dict[int, str] = {}    # utterance index -> stable text sent as deltas
        self.committed_items: set[int] = set()
        self.pending_bytes = 0                 # audio appended since the last commit or clear
        self.session_id = ""
        self.model = ""
        self._failing: R.RealtimeError | None = None

    # ---------------------------------------------------------------- picows callbacks

    def on_ws_connected(self, transport) -> None:
        super().on_ws_connected(transport)
        self.session_id = f"sess_{id(self):x}"
        self.items = R.Items(self.session_id[5:])
        query = parse_qs(self.query)
        self.query_model = (query.get("model") or [None])[0]
        intent = (query.get("intent") or [None])[0]
        try:
            if self.auth_refusal is not None:
                code, message = self.auth_refusal
                raise R.RealtimeError(code, message, kind="invalid_request_error")
            if intent not in (None, "transcription"):
                raise R.RealtimeError(R.E_SESSION_TYPE, f"intent {intent[:64]!r} is not served: speechops "
                                      "transcribes (connect with ?intent=transcription)", param="intent")
            if self.query_model in self.streams.plans or self.streams.default_pipeline:
                self.model = R.pipeline_for(self.config, self.query_model, self.streams.plans,
                                            self.streams.default_pipeline)
                self.streams.admissible(self.model)    # full or draining: say so before any audio
            self.send_text(R.session_event("created", self.config, self.session_id, self.model or "auto"))
        except R.RealtimeError as exc:
            self._fail(exc)
        except P.ProtocolError as exc:
            self.fail(exc.code, exc.message, exc.retry_after_s)

    def on_ws_frame(self, transport, frame) -> None:
        if self.done:
            return
        try:
            if not frame.fin or frame.msg_type == WSMsgType.CONTINUATION:
                raise R.RealtimeError(R.E_BAD_EVENT, "fragmented WebSocket messages are not supported")
            if frame.msg_type == WSMsgType.TEXT:
                self._command(R.parse_event(frame.get_payload_as_bytes(), self._max_append_bytes()))
            elif frame.msg_type == WSMsgType.BINARY:
                raise R.RealtimeError(R.E_BAD_EVENT, "binary frames are not part of this protocol: send audio as "
                                      "base64 in input_audio_buffer.append (or use the native /v1/stream)")
            elif frame.msg_type == WSMsgType.CLOSE:
                self.client_closed(transport, frame)
        except R.RealtimeError as exc:
            if exc.fatal:
                self._fail(exc)
            else:
                self.send_text(R.error_event(exc))
        except P.ProtocolError as exc:
            self.fail(exc.code, exc.message, exc.retry_after_s)
        except Exception:  # a bug must cost one stream, never the gateway
            log.exception("realtime stream %s failed", self.session_id)
            self.fail(P.E_INTERNAL, "the gateway failed on this stream; it was closed, other streams are unaffected")

    # ---------------------------------------------------------------- client events

    def _max_append_bytes(self) -> int:
        return int(MAX_APPEND_S * self.config.format.rate * self.config.format.bytes_per_sample)

    def _command(self, cmd: R.Command) -> None:
        if isinstance(cmd, R.Append):
            self._append(cmd)
        elif isinstance(cmd, R.Update):
            before = self.config
            self.config = R.apply_update(self.config, cmd, audio_started=self.session is not None,
                                         pipelines=self.streams.plans, languages=("en",))
            if self.session is not None and self.config.prompt != before.prompt:
                self.session.set_prompt(self.config.prompt)
            if self.session is None:
                self.model = self._pipeline(cmd.event_id)
                self.streams.admissible(self.model)
            self.send_text(R.session_event("updated", self.config, self.session_id, self.config.model or self.model))
        elif isinstance(cmd, R.Commit):
            if self.session is None or self.pending_bytes == 0:
                raise R.RealtimeError(R.E_COMMIT_EMPTY, "the input audio buffer is empty: nothing to commit",
                                      event_id=cmd.event_id, fatal=False)
            self._flush_decoder()
            self.pending_bytes = 0
            self.session.commit(on_done=lambda cut: None if cut else self.send_text(R.error_event(R.RealtimeError(
                R.E_COMMIT_EMPTY, "the audio since the last turn held no speech: nothing to commit",
                event_id=cmd.event_id, fatal=False))))
        elif isinstance(cmd, R.Clear):
            if self.session is not None:
                self._flush_decoder(discard=True)
                self.session.clear()
                for u in [u for u in self.item_of if u not in self.committed_items]:
                    del self.item_of[u]          # its turn is gone: no item for it
                    self.sent_text.pop(u, None)
            self.pending_bytes = 0
            self.send_text(R.cleared())

    def _pipeline(self, event_id: str | None) -> str:
        try:
            return R.pipeline_for(self.config, self.query_model, self.streams.plans, self.streams.default_pipeline)
        except R.RealtimeError as exc:
            exc.event_id = event_id
            raise

    def _append(self, cmd: R.Append) -> None:
        if not cmd.audio:
            return
        if self.session is None:
            self._start(cmd.event_id)
        try:
            pcm = self.decoder.push(cmd.audio)
        except CodecError as exc:
            raise R.RealtimeError(R.E_BAD_AUDIO, f"{exc} (the session's format is {self.config.format.encoding} at "
                                  f"{self.config.format.rate} Hz)", param="audio", event_id=cmd.event_id) from None
        self.pending_bytes += len(cmd.audio)
        self._feed(pcm)

    def _feed(self, pcm: bytes) -> None:
        step = self.streams.config.max_frame_bytes
        for offset in range(0, len(pcm), step):
            if self.session is None or self.session.closed:
                return
            self.session.feed(pcm[offset:offset + step])

    def _flush_decoder(self, discard: bool = False) -> None:
        tail = self.decoder.flush() if self.decoder is not None else b""
        if tail and not discard:
            self._feed(tail)

    def _start(self, event_id: str | None) -> None:
        pipeline = self._pipeline(event_id)
        self.model = pipeline
        td = self.config.turn_detection
        vad = R.vad_params(td, self.streams.config.vad) if td is not None else None
        options = P.StreamOptions(prompt=self.config.prompt)
        self.session = self.streams.open_stream(pipeline, options, self, vad, manual_turns=td is None)
        self.decoder = Decoder(self.config.format)

    # ---------------------------------------------------------------- session events (Sink)

    def emit(self, event: Event) -> None:
        kind, d = event.type, event.data
        if kind == "vad":
            self._vad(d)
        elif kind == "partial":
            u = d["utterance"]
            item = self._item(u)
            delta = R.delta(self.sent_text.get(u, ""), d["text"])
            if delta:
                self.sent_text[u] = d["text"]
                self.send_text(R.transcription_delta(item, delta))
        elif kind == "final":
            u = d["utterance"]
            item = self._item(u)
            self._commit_item(u)
            sent = self.sent_text.pop(u, "")
            rest = R.delta(sent, d["text"])
            if rest:
                self.send_text(R.transcription_delta(item, rest))
            self.send_text(R.transcription_completed(item, d["text"], d["end_s"] - d["start_s"]))
            self.item_of.pop(u, None)
            self.committed_items.discard(u)
        elif kind == "error":
            for item in self.item_of.values():     # turns that will not be transcribed now
                self.send_text(R.transcription_failed(item, d["code"], d["message"]))
            self.item_of.clear()
            err, self._failing = self._failing, None
            self.send_text(R.error_event(err or R.RealtimeError(d["code"], d["message"], retry_after_s=d.get("retry_after_s"),
                                                           kind="server_error")))
        elif kind == "closed":
            code = END_CODES.get(d.get("reason"))
            if code is not None:
                reason = d["reason"]
                self.send_text(R.error_event(R.RealtimeError(
                    code, f"the session ended: {reason.replace('_', ' ')}; its audio was transcribed"
                    + ("; reconnect and another replica takes the stream" if reason == "drain" else ""),
                    retry_after_s=RETRY_AFTER.get(reason), kind="server_error")))
        # ready, stage, degraded, restored: the protocol has no event for them.

    def _vad(self, d: dict) -> None:
        if d["event"] == "speech_start":
            if self.config.turn_detection is not None:
                self.send_text(R.speech_started(self._item(d["utterance"]), int(d["start_s"] * 1000)))
        elif d["event"] == "speech_end":
            u = d["utterance"]
            item = self._item(u)
            if self.config.turn_detection is not None:
                self.send_text(R.speech_stopped(item, int(d["end_s"] * 1000)))
            self._commit_item(u)
            if d.get("discarded"):      # too short to be speech: the turn is empty
                self.send_text(R.transcription_completed(item, "", d["end_s"] - d["start_s"]))
                self.item_of.pop(u, None)
                self.committed_items.discard(u)

    def _item(self, utterance: int) -> str:
        item = self.item_of.get(utterance)
        if item is None:
            item = self.item_of[utterance] = self.items.new()
        return item

    def _commit_item(self, utterance: int) -> None:
        if utterance in self.committed_items:
            return
        self.committed_items.add(utterance)
        item = self._item(utterance)
        self.send_text(R.committed(item, self.items.commit(item)))

    # ---------------------------------------------------------------- ending

    def fail(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        """Ends the stream with `error` and a close (the gateway's and the sessions' way to end it)."""
        self._fail(R.RealtimeError(code, message, retry_after_s=retry_after_s,
                                   kind="server_error" if code in SERVER_CODES else "invalid_request_error"))

    def _fail(self, err: R.RealtimeError) -> None:
        if self.done:
            return
        if self.session is not None and not self.session.closed:
            self._failing = err          # the session's error event goes out with this one's details
            self.session.fail(err.code, err.message, retry_after_s=err.retry_after_s)
            return
        self.send_text(R.error_event(err))
        self.streams.refused(self.model or None, err.code)
        self.close(True)

    def sweep(self, now: float) -> None:
        if self.done or self.cut_off_if_not_reading(now):
            return
        if self.session is None and now - self.connected_at > self._idle_limit():
            self.fail("idle_timeout", f"no audio within {self._idle_limit():g}s of connecting")

    def _idle_limit(self) -> float:
        # A realtime app often connects before its user speaks: the pipeline's idle
        # timeout, not the native protocol's start timeout, bounds the wait for audio.
        if self.model in self.streams.plans:
            return self.streams.plans[self.model].spec.streams.idle_timeout
        return self.streams.config.start_timeout_s
