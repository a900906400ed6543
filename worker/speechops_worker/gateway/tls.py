"""TLS for the stream port: a certificate and key from files (a mounted kubernetes.io/tls
Secret: tls.crt and tls.key, as cert-manager writes them), reloaded on rotation.

The listening socket keeps one server context; its SNI callback, which OpenSSL runs on
every handshake (with or without a server name), hands the handshake the newest context.
So a rotated certificate serves the next connection, without a restart, and streams
already open keep the session they negotiated. A rotation caught half-written (a
certificate that does not match its key) keeps the previous pair and is tried again.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from speechops_worker.gateway.file_watch import RECHECK_S, FileWatch

log = logging.getLogger("speechops.gateway.tls")

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def paths_in(directory: str | os.PathLike) -> tuple[Path, Path]:
    """tls.crt and tls.key of a mounted kubernetes.io/tls Secret."""
    d = Path(directory)
    return d / CERT_FILE, d / KEY_FILE


class CertReloader:
    def __init__(self, cert: str | os.PathLike, key: str | os.PathLike, recheck_s: float = RECHECK_S) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.watch = FileWatch(self.cert, self.key, recheck_s=recheck_s)
        try:
            self._current = _context(self.cert, self.key)   # a bad pair at start-up is fatal
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load TLS certificate {self.cert} with key {self.key}: {exc}") from None
        self.reloads = 0
        self.server_context = _context(self.cert, self.key)
        self.server_context.sni_callback = self._on_hello

    def current(self) -> ssl.SSLContext:
        """The newest good context, re-read when the files changed (at most once per recheck_s)."""
        signature = self.watch.changed()
        if signature:   # () while a file is missing: keep serving the last pair
            try:
                self._current = _context(self.cert, self.key)
                self.watch.seen = signature
                self.reloads += 1
                log.info("TLS certificate reloaded from %s", self.cert)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS certificate %s could not be loaded (%s); serving the previous one",
                            self.cert, exc)
        return self._current

    def _on_hello(self, conn, server_name, _ctx) -> None:
        conn.context = self.current()
