"""Client frames of any size -> the fixed 512-sample chunks VAD reads (32 ms at 16 kHz).

Clients send 20 ms frames (320 samples) or whatever suits them; the remainder is kept
until the next frame completes a chunk, so no sample is dropped or duplicated. This runs
for every frame of every stream: a frame that completes no chunk only appends to a
buffer, and numpy is touched once per completed chunk.
"""

from __future__ import annotations

import numpy as np

from speechops_contract.catalog import VAD_CHUNK

CHUNK_BYTES = VAD_CHUNK * 2


class Framer:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def push(self, pcm: bytes | memoryview) -> np.ndarray | None:
        """PCM16 bytes -> int16 array [n, 512] of the chunks now complete, or None."""
        buf = self._buf
        buf += pcm
        if len(buf) < CHUNK_BYTES:
            return None
        whole = len(buf) - len(buf) % CHUNK_BYTES
        chunks = np.frombuffer(buf[:whole], dtype="<i2").reshape(-1, VAD_CHUNK)
        del buf[:whole]
        return chunks

    def flush(self) -> np.ndarray:
        """The last partial chunk, zero-padded (at stop), as int16 [0 or 1, 512]."""
        if not self._buf:
            return np.zeros((0, VAD_CHUNK), dtype=np.int16)
        tail = np.zeros(VAD_CHUNK, dtype=np.int16)
        tail[: len(self._buf) // 2] = np.frombuffer(self._buf, dtype="<i2")
        self._buf.clear()
        return tail.reshape(1, VAD_CHUNK)

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)
