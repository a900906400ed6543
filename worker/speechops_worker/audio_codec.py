"""Client audio -> the models' 16 kHz PCM16: G.711 (what telephony sends) and resampling.

G.711 µ-law and A-law are decoded by table (256 entries each, ITU-T G.711); encoders
are here too so clients (`speechops stream`) and tests can send telephony audio.
Resampling is libsoxr's (python-soxr) streaming resampler: frames of any size go in,
state carries across frames, so a stream cut into 20 ms frames resamples exactly as the
whole file would (up to the filter's delay, returned by `flush`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

MODEL_RATE = 16000
PCM_RATES = (8000, 16000, 24000, 48000)   # PCM16 rates a stream may declare
G711_RATE = 8000

PCM16 = "pcm16"
PCMU = "pcmu"      # G.711 µ-law
PCMA = "pcma"      # G.711 A-law
ENCODINGS = (PCM16, PCMU, PCMA)


class CodecError(ValueError):
    """Audio that cannot be decoded as declared (odd PCM16 length, unknown format)."""


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_TABLE = _ulaw_table()
ALAW_TABLE = _alaw_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    return ULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    return ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> G.711 µ-law bytes (the reference 14-bit encoder: bias 33, clip 8159)."""
    x = pcm.astype(np.int32) >> 2
    negative = x < 0
    mag = np.minimum(np.where(negative, -x, x), 8159) + 0x21
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 5
    mantissa = (mag >> (exponent + 1)) & 0x0F
    code = np.minimum((exponent << 4) | mantissa, 0x7F)     # past the last segment: the largest code
    return (np.where(negative, code ^ 0x7F, code ^ 0xFF) & 0xFF).astype(np.uint8).tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> G.711 A-law bytes."""
    x = pcm.astype(np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.minimum(np.where(x < 0, -x - 1, x), 32767) >> 3     # 13-bit magnitude
    exponent = np.clip(np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


@dataclass(frozen=True)
class AudioFormat:
    encoding: str = PCM16
    rate: int = MODEL_RATE

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise CodecError(f"unknown encoding {self.encoding!r}; known: {', '.join(ENCODINGS)}")
        rates = PCM_RATES if self.encoding == PCM16 else (G711_RATE,)
        if self.rate not in rates:
            raise CodecError(f"{self.encoding} audio must be at {' or '.join(map(str, rates))} Hz, got {self.rate!r}")

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == PCM16 else 1

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_sample / self.rate


class Decoder:
    """One stream's audio in its declared format -> 16 kHz PCM16 bytes, frame by frame."""

    __slots__ = ("format", "_resampler")

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = None if fmt.rate == MODEL_RATE else soxr.ResampleStream(
            fmt.rate, MODEL_RATE, 1, dtype="int16", quality="HQ")

    @property
    def passthrough(self) -> bool:
        return self.format.encoding == PCM16 and self._resampler is None

    def push(self, data: bytes) -> bytes:
        """Encoded bytes (whole samples) -> 16 kHz PCM16 bytes (may be empty while the
        resampler fills its filter)."""
        if self.passthrough:
            if len(data) % 2:
                raise CodecError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
            return data
        return self._resample(self._samples(data), last=False)

    def flush(self) -> bytes:
        """The resampler's delayed tail, at the end of a turn or stream."""
        if self._resampler is None:
            return b""
        out = self._resample(np.zeros(0, dtype=np.int16), last=True)
        self._resampler = soxr.ResampleStream(self.format.rate, MODEL_RATE, 1, dtype="int16", quality="HQ")
        return out

    def _samples(self, data: bytes) -> np.ndarray:
        enc = self.format.encoding
        if enc == PCMU:
            return ulaw_decode(data)
        if enc == PCMA:
            return alaw_decode(data)
        if len(data) % 2:
            raise CodecError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
        return np.frombuffer(data, dtype="<i2")

    def _resample(self, samples: np.ndarray, last: bool) -> bytes:
        if self._resampler is None:
            return samples.astype("<i2", copy=False).tobytes()
        return self._resampler.resample_chunk(samples, last=last).astype("<i2", copy=False).tobytes()
