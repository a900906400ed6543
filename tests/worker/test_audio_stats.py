"""audio_stats logic without Triton: levels and clipping on signals with known answers."""

import numpy as np
import pytest

from speechops_worker.audio_stats import SILENCE_DBFS, StatsInputError, level_stats

T = np.arange(16000) / 16000


def sine(amplitude, clip=None):
    x = amplitude * np.sin(2 * np.pi * 440 * T)
    return np.clip(x, -clip, clip) if clip else x


@pytest.mark.parametrize("signal, rms_dbfs, peak, clip_ratio", [
    pytest.param(sine(0.5), 20 * np.log10(0.5 / np.sqrt(2)), 0.5, 0.0, id="half-scale-sine"),
    pytest.param(sine(1.0), -3.0103, 1.0, None, id="full-scale-sine"),
    pytest.param(sine(2.0, clip=1.0), None, 1.0, 1 - 2 * np.arcsin(0.5) / np.pi, id="sine-clipped-at-half-its-peak"),
    pytest.param(np.zeros(16000), SILENCE_DBFS, 0.0, 0.0, id="digital-silence"),
])
def test_levels_of_known_signals(signal, rms_dbfs, peak, clip_ratio):
    stats = level_stats(signal[None, :].astype(np.float32), np.array([len(signal)]))
    if rms_dbfs is not None:
        assert stats.rms_dbfs[0] == pytest.approx(rms_dbfs, abs=0.01)
    assert stats.peak[0] == pytest.approx(peak, abs=1e-4)
    if clip_ratio is not None:
        assert stats.clip_ratio[0] == pytest.approx(clip_ratio, abs=0.005)


def test_padding_beyond_length_is_ignored():
    loud_padding = np.ones((2, 32000), np.float32)
    loud_padding[0, :16000] = sine(0.5)
    loud_padding[1, :8000] = 0.0
    stats = level_stats(loud_padding, np.array([16000, 8000]))
    assert stats.peak.tolist() == pytest.approx([0.5, 0.0], abs=1e-4)
    assert stats.clip_ratio.tolist() == [0.0, 0.0]
    assert stats.rms_dbfs[1] == SILENCE_DBFS


@pytest.mark.parametrize("audio, lengths, message", [
    pytest.param(np.zeros(10, np.float32), [10], "AUDIO must be", id="one-dimensional"),
    pytest.param(np.zeros((2, 10), np.float32), [10], "LENGTH must be", id="length-count"),
    pytest.param(np.zeros((1, 10), np.float32), [11], "LENGTH values", id="length-too-long"),
    pytest.param(np.zeros((1, 10), np.float32), [-1], "LENGTH values", id="negative-length"),
    pytest.param(np.full((1, 10), np.inf, np.float32), [10], "NaN or infinite", id="infinite"),
])
def test_bad_input_is_refused(audio, lengths, message):
    with pytest.raises(StatsInputError, match=message):
        level_stats(audio, np.array(lengths))
