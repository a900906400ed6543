"""API keys: who may open a stream.

Keys come from a file (one key a line) or a directory, which is how a Kubernetes Secret
is mounted: each data key of the Secret a file, and every line of every file a key (so a
Secret of one key per team, or one `keys` entry with a key a line, both work). Blank
lines and lines starting with `#` are skipped. The files are looked at again at most
once a second when a stream arrives; the kubelet swaps a Secret's files atomically (a
`..data` symlink), so a rotation is picked up by the next stream and open streams are
untouched. A file that disappears or cannot be read keeps the keys last read (a
half-finished swap must not lock everyone out); a Secret emptied on purpose refuses
every stream.

Keys are held as SHA-256 digests and compared in constant time against every key; a
key is never logged, only the name of the file it came from.

Clients present a key as `Authorization: Bearer KEY` (what the OpenAI SDKs and most
HTTP clients send) or, from a browser, which cannot set headers on a WebSocket, as the
subprotocol `openai-insecure-api-key.KEY` in `Sec-WebSocket-Protocol` (the OpenAI
Realtime API's convention).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from speechops_worker.gateway.file_watch import RECHECK_S, FileWatch

log = logging.getLogger("speechops.gateway.auth")

SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."

# Why a stream was refused: the label of the refusal metric and the error code.
MISSING = "missing_api_key"
INVALID = "invalid_api_key"


class KeyFileError(ValueError):
    """The key source holds no usable key at start-up."""


@dataclass(frozen=True)
class Credential:
    key: str | None
    subprotocol: str | None        # the subprotocol to answer with (never the one carrying the key)


def credential(headers: Mapping[str, str]) -> Credential:
    """The key a client presented in its upgrade request's headers (case-insensitive mapping)."""
    key = None
    auth = headers.get("authorization") or headers.get("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            key = value.strip()
    offered = [p.strip() for p in (headers.get("sec-websocket-protocol") or
                                   headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
    answer = None
    for proto in offered:
        if proto.startswith(SUBPROTOCOL_KEY_PREFIX):
            key = key or proto[len(SUBPROTOCOL_KEY_PREFIX):] or None
        elif answer is None:
            answer = proto           # e.g. "realtime": a browser expects one it offered back
    return Credential(key, answer)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _read_keys(path: Path) -> dict[bytes, str]:
    """digest -> name ("file" or "file:line") of every key under `path`. OSError when unreadable."""
    files = [path] if not path.is_dir() else sorted(
        p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    keys: dict[bytes, str] = {}
    for f in files:
        lines = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()]
        lines = [(i, ln) for i, ln in enumerate(lines, 1) if ln and not ln.startswith("#")]
        for i, ln in lines:
            keys[_digest(ln)] = f.name if len(lines) == 1 else f"{f.name}:{i}"
    return keys


class KeyStore:
    def __init__(self, path: str | os.PathLike, recheck_s: float = RECHECK_S) -> None:
        self.path = Path(path)
        self.watch = FileWatch(self.path, recheck_s=recheck_s)
        try:
            self._keys = _read_keys(self.path)
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read API keys from {self.path}: {exc}") from None
        if not self._keys:
            raise KeyFileError(f"no API keys in {self.path} (one key a line; # starts a comment)")
        self.reloads = 0
        log.info("API keys: %d from %s", len(self._keys), self.path)

    def __len__(self) -> int:
        return len(self._keys)

    def refresh(self, force: bool = False) -> bool:
        """Re-reads the keys if their files changed (at most once per recheck_s). True on a reload."""
        signature = self.watch.changed(force)
        if signature is None:
            return False
        try:
            keys = _read_keys(self.path)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("API keys in %s could not be read (%s); keeping the %d keys read before",
                        self.path, exc.__class__.__name__, len(self._keys))
            return False
        self.watch.seen = signature
        self._keys = keys
        self.reloads += 1
        if keys:
            log.info("API keys reloaded: %d from %s", len(keys), self.path)
        else:
            log.warning("API keys: %s holds none; every stream is refused until keys are added", self.path)
        return True

    def check(self, key: str | None) -> tuple[str | None, str | None]:
        """(name of the matching key, None) or (None, refusal reason). Constant time in the key."""
        self.refresh()
        if not key:
            return None, MISSING
        digest = _digest(key)
        match = None
        for known, name in self._keys.items():   # every key compared: the time says nothing about which
            if hmac.compare_digest(digest, known):
                match = name
        return (match, None) if match is not None else (None, INVALID)
