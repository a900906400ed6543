"""Audio level and clipping per row: a cheap stage that runs beside ASR (catalog.py
`audio_stats`), so a stream's level and clipping are reported while it is transcribed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SILENCE_DBFS = -120.0        # reported for an all-zero or empty row instead of -inf
CLIP_LEVEL = 32767 / 32768   # a PCM16 sample at full scale, as float in [-1, 1)


class StatsInputError(ValueError):
    """A request that does not follow the tensor contract."""


@dataclass(frozen=True)
class LevelStats:
    rms_dbfs: np.ndarray     # [rows] RMS relative to full scale 1.0 (a full-scale sine is -3.01)
    peak: np.ndarray         # [rows] largest |sample|, 0..1
    clip_ratio: np.ndarray   # [rows] share of samples at full scale


def level_stats(audio: np.ndarray, lengths: np.ndarray) -> LevelStats:
    """Stats over the first lengths[i] samples of each zero-padded row."""
    audio = np.asarray(audio, dtype=np.float32)
    lengths = np.asarray(lengths).reshape(-1)
    if audio.ndim != 2:
        raise StatsInputError(f"AUDIO must be [rows, samples], got {list(audio.shape)}")
    if lengths.shape != (audio.shape[0],):
        raise StatsInputError(f"LENGTH must be [{audio.shape[0]}] (one per AUDIO row), got {list(lengths.shape)}")
    if (lengths < 0).any() or (lengths > audio.shape[1]).any():
        raise StatsInputError(f"LENGTH values must lie in 0..{audio.shape[1]}, got {lengths.tolist()}")
    if not np.isfinite(audio).all():
        raise StatsInputError("AUDIO holds NaN or infinite samples")
    valid = np.arange(audio.shape[1])[None, :] < lengths[:, None]
    magnitude = np.where(valid, np.abs(audio), 0.0)
    count = np.maximum(lengths, 1).astype(np.float64)
    mean_square = (magnitude.astype(np.float64) ** 2).sum(axis=1) / count
    with np.errstate(divide="ignore"):
        rms_dbfs = np.where(mean_square > 0, 10 * np.log10(mean_square), SILENCE_DBFS)
    rms_dbfs = np.maximum(rms_dbfs, SILENCE_DBFS)
    peak = magnitude.max(axis=1) if audio.shape[1] else np.zeros(audio.shape[0])
    clipped = (magnitude >= CLIP_LEVEL).sum(axis=1) / count
    return LevelStats(rms_dbfs.astype(np.float32), peak.astype(np.float32), clipped.astype(np.float32))
