"""Client frames of any size -> the fixed 512-sample chunks VAD reads (32 ms at 16 kHz).

Clients send 20 ms frames (320 samples) or whatever suits them; the remainder is kept
until the next frame completes a chunk, so no sample is dropped or duplicated.
"""

from __future__ import annotations

import numpy as np

from speechops_contract.catalog import VAD_CHUNK

CHUNK_BYTES = VAD_CHUNK * 2


class Framer:
    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def push(self, pcm: bytes) -> np.ndarray:
        """PCM16 bytes -> int16 array [n, 512] of the whole chunks now complete (n may be 0)."""
        data = self._rest + pcm if self._rest else pcm
        whole = len(data) - len(data) % CHUNK_BYTES
        self._rest = data[whole:]
        return np.frombuffer(data, dtype="<i2", count=whole // 2).reshape(-1, VAD_CHUNK)

    def flush(self) -> np.ndarray:
        """The last partial chunk, zero-padded (at stop), as int16 [0 or 1, 512]."""
        if not self._rest:
            return np.zeros((0, VAD_CHUNK), dtype=np.int16)
        tail = np.zeros(VAD_CHUNK, dtype=np.int16)
        tail[: len(self._rest) // 2] = np.frombuffer(self._rest, dtype="<i2")
        self._rest = b""
        return tail.reshape(1, VAD_CHUNK)

    @property
    def pending_bytes(self) -> int:
        return len(self._rest)
