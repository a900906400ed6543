"""The native protocol (`/v1/stream`, described in the package docstring) over picows.

One `NativeConnection` per WebSocket: it parses control messages, hands audio to its
session and serializes the session's events as JSON text frames. It is the session's
`Sink`. Everything it needs of the gateway is `Streams` below, so another protocol can
sit beside it on the same gateway. Every exception ends only this connection.
"""

from __future__ import annotations

import logging
from typing import Mapping, Protocol

from picows import WSMsgType

from speechops_worker.audio_codec import CodecError, Decoder
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.connection import Connection
from speechops_worker.gateway.pipeline import PipelinePlan
from speechops_worker.gateway.session import Event, Session

log = logging.getLogger("speechops.gateway")


class Streams(Protocol):
    """The gateway as a protocol sees it."""
    plans: Mapping[str, PipelinePlan]
    default_pipeline: str | None
    config: object      # socket_send_buffer, send_buffer_limit, slow_client_timeout_s, start_timeout_s

    def open_stream(self, pipeline: str, options: P.StreamOptions, sink, vad=None, manual_turns: bool = False) -> Session:
        """Admits and starts a session, or raises ProtocolError (over capacity, draining)."""

    def admissible(self, pipeline: str) -> None:
        """Raises the ProtocolError `open_stream` would now, without admitting anything."""

    def refused(self, pipeline: str | None, reason: str) -> None:
        """Counts a connection that ended before it had a session."""

    def connected(self, conn) -> None: ...

    def disconnected(self, conn) -> None: ...


class NativeConnection(Connection):
    def __init__(self, streams: Streams):
        super().__init__(streams)
        self._pipeline: str | None = None          # the pipeline `start` asked for
        self._request: P.StartRequest | None = None
        self._decoder: Decoder | None = None       # None: 16 kHz PCM16 goes to the session as it is

    # ---------------------------------------------------------------- picows callbacks

    def on_ws_connected(self, transport) -> None:
        super().on_ws_connected(transport)
        if self.auth_refusal is not None:
            self.fail(*self.auth_refusal)

    def on_ws_frame(self, transport, frame) -> None:
        if self.done:
            return
        try:
            if not frame.fin or frame.msg_type == WSMsgType.CONTINUATION:
                raise P.ProtocolError(P.E_BAD_MESSAGE, "fragmented WebSocket messages are not supported; send whole frames")
            if frame.msg_type == WSMsgType.BINARY:
                if self.session is None:
                    raise P.ProtocolError(P.E_NOT_STARTED, 'send {"type": "start", ...} before audio frames')
                if self._decoder is None:
                    self.session.feed(frame.get_payload_as_memoryview())   # the framer copies it once
                else:
                    self._feed_decoded(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.TEXT:
                try:
                    text = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    raise P.ProtocolError(P.E_BAD_JSON, "text frame is not valid UTF-8") from None
                self._control(P.parse_control(text))
            elif frame.msg_type == WSMsgType.CLOSE:
                self.client_closed(transport, frame)
        except P.ProtocolError as exc:
            self.fail(exc.code, exc.message, retry_after_s=exc.retry_after_s)
        except Exception:  # a bug must cost one stream, never the gateway
            log.exception("stream %x failed", self.session.stream_id if self.session else 0)
            self.fail(P.E_INTERNAL, "the gateway failed on this stream; it was closed, other streams are unaffected")

    # ---------------------------------------------------------------- control messages

    def _control(self, doc: dict) -> None:
        if doc["type"] == "start":
            if self.session is not None:
                raise P.ProtocolError(P.E_ALREADY_STARTED, "the stream has already started; open a new connection")
            req = P.parse_start(doc, self.streams.plans, self.streams.default_pipeline)
            self._pipeline, self._request = req.pipeline, req
            decoder = Decoder(req.audio_format)
            self._decoder = None if decoder.passthrough else decoder
            self.session = self.streams.open_stream(req.pipeline, req.options, self)
        elif self.session is None:
            raise P.ProtocolError(P.E_NOT_STARTED, f'send {{"type": "start", ...}} before "{doc["type"]}"')
        else:
            if self._decoder is not None and (tail := self._decoder.flush()):
                self.session.feed(tail)
            if doc["type"] == "commit":
                self.session.commit()
            else:
                self.session.end("stop")

    def _feed_decoded(self, data: bytes) -> None:
        """8/24/48 kHz or G.711 -> 16 kHz PCM16 (soxr keeps a filter's worth back)."""
        P.check_frame(len(data), self.streams.config.max_frame_bytes, self._decoder.format)
        try:
            pcm = self._decoder.push(data)
        except CodecError as exc:
            raise P.ProtocolError(P.E_ODD_FRAME, str(exc)) from None
        if pcm:
            self.session.feed(pcm)

    # ---------------------------------------------------------------- ending

    def fail(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        if self.done:
            return
        if self.session is not None:
            self.session.fail(code, message, retry_after_s=retry_after_s)
            return
        self.emit(Event("error", P.error_fields(code, message, retry_after_s)))
        self.emit(Event("closed", {"reason": code}))
        self.streams.refused(self._pipeline, code)
        self.close(True)

    def sweep(self, now: float) -> None:
        """Clients that stopped reading, connections that never started (the gateway
        calls this every half second)."""
        if self.done or self.cut_off_if_not_reading(now):
            return
        if self.session is None and now - self.connected_at > self.streams.config.start_timeout_s:
            self.fail(P.E_NOT_STARTED, f"no start message within {self.streams.config.start_timeout_s:g}s")

    # ---------------------------------------------------------------- Sink

    def emit(self, event: Event) -> None:
        """Sends one event as a JSON text frame."""
        if self.done:
            return
        data = event.data
        if event.type == "ready" and self._request is not None:   # what the client sends, not what the models read
            data = {**data, "sample_rate": self._request.sample_rate, "encoding": self._request.encoding}
        self.send_text(P.event(event.type, **data))
