"""What every protocol's WebSocket connection does the same way (native.py, realtime_conn.py):
socket options, the gateway's bookkeeping, backpressure both ways, cutting off a client
that stops reading, closing. A protocol adds its parsing and its events."""

from __future__ import annotations

import logging
import socket
import time

from picows import WSCloseCode, WSListener, WSMsgType

from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.session import Session

log = logging.getLogger("speechops.gateway")


class Connection(WSListener):
    auth_refusal: tuple[str, str] | None = None    # (code, message): the gateway refused the key
    query = ""                                     # the URL's query string

    def __init__(self, streams):
        self.streams = streams                     # native.Streams: the gateway as a protocol sees it
        self.transport = None
        self.session: Session | None = None
        self.done = False
        self.connected_at = time.monotonic()
        self.paused_since: float | None = None     # our writes are paused (the client is not reading)
        self._send_limit = streams.config.send_buffer_limit

    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None and self.streams.config.socket_send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.streams.config.socket_send_buffer)
        self.streams.connected(self)

    def on_ws_disconnected(self, transport) -> None:
        self.done = True
        if self.session is not None and not self.session.closed:
            log.info("stream %x: client went away mid-stream", self.session.stream_id)
            self.session.release()
        self.streams.disconnected(self)

    def client_closed(self, transport, frame) -> None:
        """The client sent a close frame without ending its stream: nothing more can be
        sent to it, so the session is freed without a word and the close answered."""
        self.done = True
        if self.session is not None:
            self.session.release()
        transport.send_close(frame.get_close_code())
        transport.disconnect()

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.paused_since = None

    def cut_off_if_not_reading(self, now: float) -> bool:
        """The gateway's sweep: a client whose writes stayed paused too long is dropped."""
        if self.paused_since is not None and now - self.paused_since > self.streams.config.slow_client_timeout_s:
            self._cut_off()
            return True
        return False

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

    def send_text(self, data: bytes) -> None:
        """Sends one event; a client that stops reading is cut off, never buffered forever."""
        t = self.transport
        if self.done or t is None or t.is_disconnected:
            return
        t.send(WSMsgType.TEXT, data)
        if t.underlying_transport.get_write_buffer_size() > self._send_limit:
            self._cut_off()

    # ---------------------------------------------------------------- the session's Sink, in part

    def pause_input(self) -> None:
        self.transport.underlying_transport.pause_reading()

    def resume_input(self) -> None:
        self.transport.underlying_transport.resume_reading()

    def close(self, error: bool) -> None:
        self.done = True
        self.transport.send_close(WSCloseCode.POLICY_VIOLATION if error else WSCloseCode.OK)
        self.transport.disconnect()
