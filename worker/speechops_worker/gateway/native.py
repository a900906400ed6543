"""The native protocol (`/v1/stream`, described in the package docstring) over picows.

One `NativeConnection` per WebSocket: it parses control messages, hands audio to its
session and serializes the session's events as JSON text frames. It is the session's
`Sink`. Everything it needs of the gateway is `Streams` below, so another protocol can
sit beside it on the same gateway. Every exception ends only this connection.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Mapping, Protocol

from picows import WSCloseCode, WSListener, WSMsgType

from speechops_worker.audio_codec import CodecError, Decoder
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.pipeline import PipelinePlan
from speechops_worker.gateway.session import Event, Session

log = logging.getLogger("speechops.gateway")


class Streams(Protocol):
    """The gateway as a protocol sees it."""
    plans: Mapping[str, PipelinePlan]
    default_pipeline: str | None
    config: object      # socket_send_buffer, send_buffer_limit, slow_client_timeout_s, start_timeout_s

    def open_stream(self, pipeline: str, options: P.StreamOptions, sink, vad=None) -> Session:
        """Admits and starts a session, or raises ProtocolError (over capacity, draining)."""

    def refused(self, pipeline: str | None, reason: str) -> None:
        """Counts a connection that ended before it had a session."""

    def connected(self, conn) -> None: ...

    def disconnected(self, conn) -> None: ...


class NativeConnection(WSListener):
    auth_refusal: tuple[str, str] | None = None    # (code, message): refused before any message
    query = ""
    def __init__(self, streams: Streams):
        self.streams = streams
        self.transport = None
        self.session: Session | None = None
        self._pipeline: str | None = None          # the pipeline `start` asked for
        self._request: P.StartRequest | None = None
        self._decoder: Decoder | None = None       # None: 16 kHz PCM16 goes to the session as it is
        self.done = False
        self.connected_at = time.monotonic()
        self.paused_since: float | None = None     # our writes are paused (the client is not reading)
        cfg = streams.config
        self._send_limit = cfg.send_buffer_limit

    # ---------------------------------------------------------------- picows callbacks

    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None and self.streams.config.socket_send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.streams.config.socket_send_buffer)
        self.streams.connected(self)
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
                # The client closed without `stop`: nothing more can be sent to it.
                self.done = True
                if self.session is not None:
                    self.session.release()
                transport.send_close(frame.get_close_code())
                transport.disconnect()
        except P.ProtocolError as exc:
            self.fail(exc.code, exc.message, retry_after_s=exc.retry_after_s)
        except Exception:  # a bug must cost one stream, never the gateway
            log.exception("stream %x failed", self.session.stream_id if self.session else 0)
            self.fail(P.E_INTERNAL, "the gateway failed on this stream; it was closed, other streams are unaffected")

    def on_ws_disconnected(self, transport) -> None:
        self.done = True
        if self.session is not None and not self.session.closed:
            log.info("stream %x: client went away mid-stream", self.session.stream_id)
            self.session.release()
        self.streams.disconnected(self)

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.paused_since = None

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
        if self.done:
            return
        if self.paused_since is not None and now - self.paused_since > self.streams.config.slow_client_timeout_s:
            self._cut_off()
        elif self.session is None and now - self.connected_at > self.streams.config.start_timeout_s:
            self.fail(P.E_NOT_STARTED, f"no start message within {self.streams.config.start_timeout_s:g}s")

    def _cut_off(self) -> None:
        """A client that does not read cannot be told; it is logged, counted and dropped."""
        log.warning("stream %x: client is not reading its events; closing it",
                    self.session.stream_id if self.session else 0)
        self.done = True
        if self.session is not None:
            self.session.cut_off(P.E_SLOW_CONSUMER)
        else:
            self.streams.refused(None, P.E_SLOW_CONSUMER)
        self.transport.disconnect(graceful=False)

    # ---------------------------------------------------------------- Sink

    def emit(self, event: Event) -> None:
        """Sends one event; a client that stops reading is cut off, never buffered forever."""
        t = self.transport
        if self.done or t.is_disconnected:
            return
        data = event.data
        if event.type == "ready" and self._request is not None:   # what the client sends, not what the models read
            data = {**data, "sample_rate": self._request.sample_rate, "encoding": self._request.encoding}
        t.send(WSMsgType.TEXT, P.event(event.type, **data))
        if t.underlying_transport.get_write_buffer_size() > self._send_limit:
            self._cut_off()

    def pause_input(self) -> None:
        self.transport.underlying_transport.pause_reading()

    def resume_input(self) -> None:
        self.transport.underlying_transport.resume_reading()

    def close(self, error: bool) -> None:
        self.done = True
        self.transport.send_close(WSCloseCode.POLICY_VIOLATION if error else WSCloseCode.OK)
        self.transport.disconnect()
