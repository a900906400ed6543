"""BatchedVad without Triton: state per stream, rounds, START/END, sweep, bad input."""

import numpy as np
import pytest
import torch

import speech
from speechops_contract.catalog import VAD_CHUNK
from speechops_worker.vad import BatchedVad, VadInputError, load_silero_16k, rounds, speech_segments


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_silero_16k()


def chunks(pcm16: np.ndarray) -> np.ndarray:
    audio = speech.to_float(pcm16)
    audio = np.pad(audio, (0, -len(audio) % VAD_CHUNK))
    return audio.reshape(-1, VAD_CHUNK)


def utterance(text="The quick brown fox jumps over the lazy dog.") -> np.ndarray:
    return chunks(np.concatenate([speech.silence(0.6), speech.synthesize(text), speech.silence(0.8)]))


def one_stream_reference(audio_chunks: np.ndarray) -> np.ndarray:
    """Silero's own public wrapper, one stream, chunk by chunk: what each stream must get."""
    import warnings

    import silero_vad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, inside silero-vad
        wrapper = silero_vad.load_silero_vad()
    wrapper.reset_states()
    return np.array([wrapper(torch.from_numpy(c.copy()), 16000).item() for c in audio_chunks], dtype=np.float32)


def run_packed(vad: BatchedVad, streams: dict[int, np.ndarray], rows_per_request: int) -> dict[int, np.ndarray]:
    """Feed all streams interleaved, `rows_per_request` chunks of each stream per request."""
    out = {sid: [] for sid in streams}
    total = max(len(a) for a in streams.values())
    for begin in range(0, total, rows_per_request):
        audio, ids, start, end, owners = [], [], [], [], []
        for k in range(begin, min(begin + rows_per_request, total)):
            for sid, a in streams.items():
                if k < len(a):
                    audio.append(a[k]); ids.append(sid); start.append(k == 0); end.append(k == len(a) - 1)
                    owners.append(sid)
        probs = vad.process(np.stack(audio), np.array(ids, np.uint64), np.array(start), np.array(end))
        for sid, p in zip(owners, probs):
            out[sid].append(p)
    return {sid: np.array(p) for sid, p in out.items()}


@pytest.mark.parametrize("ids, expected", [
    pytest.param([], [], id="empty"),
    pytest.param([1, 2, 3], [[0, 1, 2]], id="distinct-streams-one-round"),
    pytest.param([1, 1, 2, 1], [[0, 2], [1], [3]], id="repeated-stream-in-time-order"),
    pytest.param([5, 6, 5, 6], [[0, 1], [2, 3]], id="two-streams-two-rows-each"),
])
def test_rounds_take_each_streams_kth_row(ids, expected):
    assert [r.tolist() for r in rounds(np.array(ids, dtype=np.uint64))] == expected


@pytest.mark.parametrize("rows_per_request", [1, 3], ids=["one-row-per-stream", "three-rows-per-stream"])
def test_batched_streams_match_silero_one_stream_at_a_time(model, rows_per_request):
    speech_a = utterance()
    speech_b = utterance("Please call Stella and ask her to bring these things.")
    quiet = chunks(speech.silence(2.0))
    vad = BatchedVad(model)
    got = run_packed(vad, {1: speech_a, 2: quiet, 3: speech_a, 4: speech_b}, rows_per_request)
    reference = one_stream_reference(speech_a)
    np.testing.assert_allclose(got[1], reference, atol=1e-4)  # float noise of batching
    np.testing.assert_allclose(got[1], got[3], atol=1e-6)  # same audio, same state: never mixed
    np.testing.assert_allclose(got[4], one_stream_reference(speech_b), atol=1e-4)
    assert got[2].max() < 0.1
    assert vad.stats().active_streams == 0  # every stream ended


def test_segments_cover_the_spoken_part_only(model):
    lead, spoken = speech.silence(1.0), speech.synthesize("We need to schedule a meeting with the design team.")
    audio = chunks(np.concatenate([lead, spoken, speech.silence(1.0)]))
    probs = BatchedVad(model).process(audio, np.full(len(audio), 9, np.uint64),
                                      np.arange(len(audio)) == 0, np.zeros(len(audio), bool))
    segments = speech_segments(probs)
    assert segments, "no speech found"
    first, last = segments[0][0] * VAD_CHUNK / 16000, segments[-1][1] * VAD_CHUNK / 16000
    speech_start, speech_end = len(lead) / 16000, (len(lead) + len(spoken)) / 16000
    assert speech_start - 0.2 <= first <= speech_start + 0.4
    assert speech_end - 0.6 <= last <= speech_end + 0.4
    assert probs[: int(0.8 * 16000 / VAD_CHUNK)].max() < 0.2


def test_start_resets_and_end_frees_state(model):
    audio = utterance()
    vad = BatchedVad(model)
    one = lambda sid, row, start=False, end=False: vad.process(  # noqa: E731
        audio[row:row + 1], np.array([sid], np.uint64), np.array([start]), np.array([end]))[0]
    fresh = one(1, 40, start=True)
    for row in range(30, 40):
        one(2, row, start=row == 30)
    carried = one(2, 40)
    assert carried != pytest.approx(fresh, abs=1e-6), "state had no effect; the test proves nothing"
    assert one(2, 40, start=True) == pytest.approx(fresh, abs=1e-6)  # START: state reset
    one(2, 41, end=True)
    assert not vad.has_stream(2)
    assert one(2, 40) == pytest.approx(fresh, abs=1e-6)  # after END a row starts afresh
    assert vad.stats().implicit_starts == 1


def test_idle_streams_are_swept_on_the_next_request(model):
    clock = [100.0]
    vad = BatchedVad(model, idle_timeout_s=5.0, clock=lambda: clock[0])
    quiet = np.zeros((1, VAD_CHUNK), np.float32)
    for sid in (1, 2):
        vad.process(quiet, np.array([sid], np.uint64), np.array([True]), np.array([False]))
    clock[0] += 4.0
    vad.process(quiet, np.array([2], np.uint64), np.array([False]), np.array([False]))
    clock[0] += 2.0  # stream 1 idle 6 s, stream 2 idle 2 s
    vad.process(quiet, np.array([3], np.uint64), np.array([True]), np.array([False]))
    assert (vad.has_stream(1), vad.has_stream(2), vad.has_stream(3)) == (False, True, True)
    assert vad.stats().swept == 1


def test_many_streams_grow_capacity_and_reuse_slots(model):
    vad = BatchedVad(model, initial_capacity=8)
    n = 300
    audio = np.random.default_rng(1).normal(0, 0.05, (n, VAD_CHUNK)).astype(np.float32)
    ids = np.arange(1000, 1000 + n, dtype=np.uint64)
    probs = vad.process(audio, ids, np.ones(n, bool), np.zeros(n, bool))
    assert probs.shape == (n,) and vad.stats().active_streams == n and vad.stats().capacity >= n
    vad.process(audio, ids, np.zeros(n, bool), np.ones(n, bool))
    capacity = vad.stats().capacity
    vad.process(audio, ids + n, np.ones(n, bool), np.zeros(n, bool))
    assert vad.stats().capacity == capacity  # freed slots were reused


@pytest.mark.parametrize("audio, ids, start, end, message", [
    pytest.param(np.zeros((2, 320), np.float32), [1, 2], [1, 1], [0, 0], "AUDIO must be", id="wrong-chunk-size"),
    pytest.param(np.zeros((2, VAD_CHUNK), np.float32), [1], [1, 1], [0, 0], "STREAM_ID must be", id="ids-short"),
    pytest.param(np.zeros((2, VAD_CHUNK), np.float32), [1, 2], [1], [0, 0], "START must be", id="start-short"),
    pytest.param(np.full((1, VAD_CHUNK), np.nan, np.float32), [1], [1], [0], "NaN", id="nan-audio"),
])
def test_bad_requests_raise_clear_errors_and_keep_state(model, audio, ids, start, end, message):
    vad = BatchedVad(model)
    vad.process(np.zeros((1, VAD_CHUNK), np.float32), np.array([7], np.uint64), np.array([True]), np.array([False]))
    with pytest.raises(VadInputError, match=message):
        vad.process(audio, np.array(ids, np.uint64), np.array(start, bool), np.array(end, bool))
    assert vad.has_stream(7) and vad.stats().active_streams == 1
