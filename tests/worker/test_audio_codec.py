"""audio_codec: G.711 against ITU-T values and Python's reference codec, resampling of tones."""

import warnings

import numpy as np
import pytest

from speechops_worker import audio_codec as C


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * amp).astype(np.int16)


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = got.astype(np.float64) - ref
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum(noise ** 2), 1e-9))


def stream(decoder: C.Decoder, data: bytes, frame: int) -> np.ndarray:
    out = b"".join(decoder.push(data[i:i + frame]) for i in range(0, len(data), frame)) + decoder.flush()
    return np.frombuffer(out, dtype="<i2")


def test_g711_known_values():
    # ITU-T G.711: µ-law 0xFF and 0x7F are the two zeros, 0x80/0x00 the extremes;
    # A-law 0xD5/0x55 the smallest steps either side of zero, 0xAA/0x2A the extremes.
    assert C.ULAW_TABLE[0xFF] == 0 and C.ULAW_TABLE[0x7F] == 0
    assert C.ULAW_TABLE[0x80] == 32124 and C.ULAW_TABLE[0x00] == -32124
    assert C.ALAW_TABLE[0xD5] == 8 and C.ALAW_TABLE[0x55] == -8
    assert C.ALAW_TABLE[0xAA] == 32256 and C.ALAW_TABLE[0x2A] == -32256
    assert C.ulaw_encode(np.array([0, 32767, -32768], np.int16)) == bytes([0xFF, 0x80, 0x00])
    assert C.alaw_encode(np.array([0, 32767, -32768], np.int16)) == bytes([0xD5, 0xAA, 0x2A])


def test_g711_matches_the_reference_codec_on_every_value():
    audioop = pytest.importorskip("audioop", reason="audioop left Python in 3.13; the known values above still run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        every = bytes(range(256))
        assert np.array_equal(C.ulaw_decode(every), np.frombuffer(audioop.ulaw2lin(every, 2), "<i2"))
        assert np.array_equal(C.alaw_decode(every), np.frombuffer(audioop.alaw2lin(every, 2), "<i2"))
        pcm = np.arange(-32768, 32768, dtype=np.int16)
        assert C.ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)
        assert C.alaw_encode(pcm) == audioop.lin2alaw(pcm.tobytes(), 2)


@pytest.mark.parametrize("encoding", [C.PCMU, C.PCMA])
def test_g711_tone_in_20ms_frames_comes_out_at_16k(encoding):
    encode = C.ulaw_encode if encoding == C.PCMU else C.alaw_encode
    data = encode(tone(8000))
    got = stream(C.Decoder(C.AudioFormat(encoding, 8000)), data, 160)
    want = tone(16000)
    assert len(got) == len(want)
    # G.711 quantisation bounds the SNR near 38 dB; the resampler must not lose more than a few.
    assert snr_db(want[800:-800], got[800:-800]) > 30


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_pcm16_resampled_to_16k(rate):
    got = stream(C.Decoder(C.AudioFormat(C.PCM16, rate)), tone(rate).tobytes(), rate // 50 * 2)
    want = tone(16000)
    assert len(got) == len(want)
    assert snr_db(want[800:-800], got[800:-800]) > 40
    spectrum = np.abs(np.fft.rfft(got))
    assert np.argmax(spectrum) == 440           # 1 s at 16 kHz: bin = Hz


def test_frames_resample_as_the_whole_file_would():
    data = tone(24000, hz=1000).tobytes()
    framed = stream(C.Decoder(C.AudioFormat(C.PCM16, 24000)), data, 960)
    whole = stream(C.Decoder(C.AudioFormat(C.PCM16, 24000)), data, len(data))
    assert len(framed) == len(whole)
    assert np.abs(framed.astype(int) - whole.astype(int)).max() <= 2       # int16 rounding only


def test_decoder_flush_resets_for_the_next_turn():
    d = C.Decoder(C.AudioFormat(C.PCM16, 24000))
    first = stream(d, tone(24000, 0.5).tobytes(), 960)
    second = stream(d, tone(24000, 0.5).tobytes(), 960)
    assert len(first) == len(second) == 8000
    assert np.abs(first.astype(int) - second.astype(int)).max() <= 2


def test_16k_pcm16_passes_through_untouched():
    d = C.Decoder(C.AudioFormat())
    pcm = tone(16000).tobytes()
    assert d.passthrough and d.push(pcm) is pcm and d.flush() == b""


def test_bad_formats_and_odd_lengths():
    with pytest.raises(C.CodecError, match="8000"):
        C.AudioFormat(C.PCMU, 16000)
    with pytest.raises(C.CodecError, match="44100"):
        C.AudioFormat(C.PCM16, 44100)
    with pytest.raises(C.CodecError, match="unknown encoding"):
        C.AudioFormat("opus", 48000)
    for rate in (16000, 24000):
        with pytest.raises(C.CodecError, match="even"):
            C.Decoder(C.AudioFormat(C.PCM16, rate)).push(b"\x00\x01\x02")
    assert C.AudioFormat(C.PCMU, 8000).seconds(8000) == 1.0
    assert C.AudioFormat(C.PCM16, 24000).seconds(48000) == 1.0
