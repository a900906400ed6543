"""The OpenAI Realtime transcription protocol layer: client events -> commands, server events
checked against the openai SDK's own models (pydantic, strict)."""

import base64
import json

import pydantic
import pytest
from openai.types.realtime import RealtimeServerEvent
from openai.types.realtime.session_update_event_param import SessionUpdateEventParam

from speechops_worker.audio_codec import PCM16, PCMA, PCMU, AudioFormat
from speechops_worker.gateway import realtime as R
from speechops_worker.gateway.segmenter import VadParams

PIPELINES = {"default": object(), "meetings": object()}
SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)


def parse(doc, max_audio=48_000):
    return R.parse_event(json.dumps(doc), max_audio)


def error_of(doc, max_audio=48_000) -> R.RealtimeError:
    with pytest.raises(R.RealtimeError) as info:
        parse(doc, max_audio) if not isinstance(doc, str) else R.parse_event(doc, max_audio)
    return info.value


def ga_update(**input_fields):
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": input_fields}}}


def update(doc, config=None, audio_started=False):
    cmd = parse(doc)
    return R.apply_update(config or R.SessionConfig(), cmd, audio_started=audio_started, pipelines=PIPELINES)


def strict(raw: bytes):
    """A server event as the SDK's models see it (every required field, every literal)."""
    return SERVER_EVENT.validate_python(json.loads(raw))


# ---------------------------------------------------------------- client events


def test_append_commit_clear():
    pcm = b"\x01\x00" * 480
    cmd = parse({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode(), "event_id": "e1"})
    assert cmd == R.Append(pcm, "e1")
    assert parse({"type": "input_audio_buffer.commit"}) == R.Commit()
    assert parse({"type": "input_audio_buffer.clear", "event_id": "x"}) == R.Clear("x")


def test_ga_session_update_as_the_sdk_types_it():
    doc: SessionUpdateEventParam = {"type": "session.update", "session": {
        "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "Kubernetes"},
            "turn_detection": {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200,
                               "silence_duration_ms": 700},
            "noise_reduction": None}},
        "include": []}}
    cfg = update(doc)
    assert cfg.format == AudioFormat(PCMU, 8000)
    assert cfg.turn_detection == R.TurnDetection(0.6, 200, 700)
    assert (cfg.model, cfg.language, cfg.prompt, cfg.beta) == ("gpt-4o-transcribe", "en", "Kubernetes", False)


def test_beta_transcription_session_update():
    cfg = update({"type": "transcription_session.update", "session": {
        "input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": None, "input_audio_noise_reduction": None, "modalities": ["text"]}})
    assert cfg.format == AudioFormat(PCMA, 8000)
    assert cfg.turn_detection is None and cfg.beta and cfg.model == "whisper-1"


def test_partial_updates_keep_what_they_do_not_name():
    cfg = update(ga_update(turn_detection={"type": "server_vad", "silence_duration_ms": 900}),
                 R.default_config(VadParams()))
    assert cfg.turn_detection == R.TurnDetection(0.5, 320, 900)
    cfg2 = update(ga_update(format={"type": "audio/pcm", "rate": 48000}), cfg)
    assert cfg2.format == AudioFormat(PCM16, 48000) and cfg2.turn_detection == cfg.turn_detection
    assert update({"type": "session.update", "session": {"type": "transcription"}}, cfg2) == cfg2


def test_keywords_join_the_prompt():
    cfg = update(ga_update(transcription={"prompt": "speechops", "keywords": ["Triton", "CTranslate2"]}))
    assert cfg.prompt == "speechops Triton CTranslate2"


@pytest.mark.parametrize("doc, code, param", [
    ("{not json", R.E_BAD_JSON, None),
    ("[1, 2]", R.E_BAD_EVENT, "type"),
    ('{"type": 5}', R.E_BAD_EVENT, "type"),
    ("[" * 100_000, R.E_BAD_JSON, None),
    ({"type": "input_audio_buffer.append"}, R.E_BAD_EVENT, "audio"),
    ({"type": "input_audio_buffer.append", "audio": 12}, R.E_BAD_EVENT, "audio"),
    ({"type": "input_audio_buffer.append", "audio": "!!!!"}, R.E_BAD_AUDIO, "audio"),
    ({"type": "input_audio_buffer.append", "audio": "AAA"}, R.E_BAD_AUDIO, "audio"),
    ({"type": "input_audio_buffer.append", "audio": "A" * 64_004}, R.E_AUDIO_TOO_LARGE, "audio"),
    ({"type": "input_audio_buffer.append", "audio": "", "extra": 1}, R.E_UNKNOWN_PARAMETER, "extra"),
    ({"type": "input_audio_buffer.commit", "event_id": 7}, R.E_BAD_EVENT, "event_id"),
    ({"type": "input_audio_buffer.commit", "event_id": "x" * 129}, R.E_BAD_EVENT, "event_id"),
    ({"type": "session.delete"}, R.E_UNKNOWN_EVENT, "type"),
    ({"type": "session.update"}, R.E_BAD_EVENT, "session"),
    ({"type": "session.update", "session": {"type": "realtime"}}, R.E_SESSION_TYPE, "session.type"),
    ({"type": "session.update", "session": {"type": "transcription", "voice": "alloy"}}, R.E_UNKNOWN_PARAMETER,
     "session.voice"),
    ({"type": "session.update", "session": {"type": "transcription", "include": [
        "item.input_audio_transcription.logprobs"]}}, R.E_UNSUPPORTED, "session.include"),
    (ga_update(format={"type": "audio/opus"}), R.E_BAD_VALUE, "session.audio.input.format.type"),
    (ga_update(format={"type": "audio/pcm", "rate": 44100}), R.E_BAD_VALUE, "session.audio.input.format.rate"),
    (ga_update(format={"type": "audio/pcm", "rate": "24000"}), R.E_BAD_EVENT, "session.audio.input.format.rate"),
    (ga_update(format={"type": "audio/pcmu", "rate": 16000}), R.E_BAD_VALUE, "session.audio.input.format.rate"),
    (ga_update(noise_reduction={"type": "near_field"}), R.E_UNSUPPORTED, "session.audio.input.noise_reduction"),
    (ga_update(transcription=None), R.E_UNSUPPORTED, "session.audio.input.transcription"),
    (ga_update(transcription={"model": 3}), R.E_BAD_EVENT, "session.audio.input.transcription.model"),
    (ga_update(transcription={"language": "English"}), R.E_BAD_VALUE, "session.audio.input.transcription.language"),
    (ga_update(transcription={"delay": "low"}), R.E_UNSUPPORTED, "session.audio.input.transcription.delay"),
    (ga_update(transcription={"languages": ["en", "de"]}), R.E_UNSUPPORTED,
     "session.audio.input.transcription.languages"),
    (ga_update(transcription={"prompt": "x" * 501}), R.E_BAD_VALUE, "session.audio.input.transcription.prompt"),
    (ga_update(turn_detection={"type": "semantic_vad"}), R.E_UNSUPPORTED, "session.audio.input.turn_detection.type"),
    (ga_update(turn_detection={"type": "loud"}), R.E_BAD_VALUE, "session.audio.input.turn_detection.type"),
    (ga_update(turn_detection={"type": "server_vad", "threshold": 1.5}), R.E_BAD_VALUE,
     "session.audio.input.turn_detection.threshold"),
    (ga_update(turn_detection={"type": "server_vad", "threshold": True}), R.E_BAD_EVENT,
     "session.audio.input.turn_detection.threshold"),
    (ga_update(turn_detection={"type": "server_vad", "silence_duration_ms": 10.5}), R.E_BAD_EVENT,
     "session.audio.input.turn_detection.silence_duration_ms"),
    (ga_update(turn_detection={"type": "server_vad", "prefix_padding_ms": -1}), R.E_BAD_VALUE,
     "session.audio.input.turn_detection.prefix_padding_ms"),
    (ga_update(turn_detection={"type": "server_vad", "idle_timeout_ms": 5000}), R.E_UNSUPPORTED,
     "session.audio.input.turn_detection.idle_timeout_ms"),
    (ga_update(turn_detection={"type": "server_vad", "create_response": "yes"}), R.E_BAD_EVENT,
     "session.audio.input.turn_detection.create_response"),
    ({"type": "transcription_session.update", "session": {"input_audio_format": "opus"}}, R.E_BAD_VALUE,
     "session.input_audio_format"),
    ({"type": "transcription_session.update", "session": {"input_audio_noise_reduction": {"type": "far_field"}}},
     R.E_UNSUPPORTED, "session.input_audio_noise_reduction"),
])
def test_bad_client_events_end_the_stream_with_a_named_error(doc, code, param):
    err = error_of(doc, max_audio=48_000)
    assert (err.code, err.param, err.fatal) == (code, param, True)
    assert err.message


def test_conversation_events_are_refused_but_the_session_goes_on():
    err = error_of({"type": "response.create", "event_id": "r1"})
    assert (err.code, err.fatal, err.event_id) == (R.E_UNSUPPORTED_EVENT, False, "r1")


def test_errors_name_the_client_event():
    err = error_of(ga_update(turn_detection={"type": "semantic_vad"}) | {"event_id": "evt-9"})
    assert err.event_id == "evt-9"


def test_models_pick_pipelines_or_are_refused():
    assert update(ga_update(transcription={"model": "meetings"})).model == "meetings"
    cfg = R.SessionConfig(model="whisper-1")
    assert R.pipeline_for(cfg, None, PIPELINES, "default") == "default"
    assert R.pipeline_for(cfg, "meetings", PIPELINES, "default") == "meetings"
    assert R.pipeline_for(R.SessionConfig(model="meetings"), "default", PIPELINES, None) == "meetings"
    with pytest.raises(R.RealtimeError) as info:
        R.pipeline_for(cfg, None, PIPELINES, None)
    assert info.value.code == R.E_UNKNOWN_MODEL
    with pytest.raises(R.RealtimeError) as info:
        update(ga_update(transcription={"model": "my-model"}))
    assert info.value.code == R.E_UNKNOWN_MODEL and "meetings" in info.value.message


def test_languages_the_pipeline_does_not_decode_are_refused():
    with pytest.raises(R.RealtimeError) as info:
        update(ga_update(transcription={"language": "de"}))
    assert info.value.code == R.E_UNSUPPORTED and "en" in info.value.message


def test_format_and_turn_mode_are_fixed_once_audio_arrived():
    cfg = R.default_config(VadParams())
    with pytest.raises(R.RealtimeError) as info:
        update(ga_update(format={"type": "audio/pcmu"}), cfg, audio_started=True)
    assert info.value.code == R.E_LOCKED
    with pytest.raises(R.RealtimeError):
        update(ga_update(turn_detection=None), cfg, audio_started=True)
    with pytest.raises(R.RealtimeError):
        update(ga_update(turn_detection={"type": "server_vad", "threshold": 0.7}), cfg, audio_started=True)
    # The prompt, and the same settings again, are fine mid-stream.
    later = update(ga_update(turn_detection={"type": "server_vad"}, transcription={"prompt": "Triton"}), cfg,
                   audio_started=True)
    assert later.turn_detection == cfg.turn_detection and later.prompt == "Triton"


def test_vad_mapping_round_trips():
    base = VadParams()
    assert R.vad_params(R.turn_detection_of(base), base) == base
    p = R.vad_params(R.TurnDetection(0.7, 300, 500), base)
    assert (p.threshold, p.pre_roll_chunks, p.min_silence_chunks) == (0.7, 10, 16)   # 32 ms chunks, rounded up
    assert R.vad_params(R.TurnDetection(0.5, 0, 32), base).min_silence_chunks == 1


# ---------------------------------------------------------------- server events


def test_server_events_validate_against_the_sdk_models():
    cfg = R.SessionConfig(turn_detection=R.TurnDetection(), model="whisper-1", language="en")
    created = strict(R.session_event("created", cfg, "sess_1", "whisper-tiny.en"))
    assert created.type == "session.created" and created.session.type == "transcription"
    assert created.session.audio.input.format.type == "audio/pcm"
    assert created.session.audio.input.turn_detection.silence_duration_ms == 256
    updated = strict(R.session_event("updated", R.SessionConfig(format=AudioFormat(PCMU, 8000), turn_detection=None),
                                     "sess_1", "default"))
    assert updated.session.audio.input.format.type == "audio/pcmu" and updated.session.audio.input.turn_detection is None
    assert updated.session.audio.input.transcription.model == "default"
    for raw, kind in [
        (R.speech_started("item_a_1", 320), "input_audio_buffer.speech_started"),
        (R.speech_stopped("item_a_1", 1900), "input_audio_buffer.speech_stopped"),
        (R.committed("item_a_1", None), "input_audio_buffer.committed"),
        (R.cleared(), "input_audio_buffer.cleared"),
        (R.transcription_delta("item_a_1", " front"), "conversation.item.input_audio_transcription.delta"),
        (R.transcription_completed("item_a_1", "Front center.", 1.6),
         "conversation.item.input_audio_transcription.completed"),
        (R.transcription_failed("item_a_1", "inference_unavailable", "Triton is down"),
         "conversation.item.input_audio_transcription.failed"),
        (R.error_event(R.RealtimeError("over_capacity", "full", retry_after_s=2.0)), "error"),
    ]:
        ev = strict(raw)
        assert ev.type == kind and ev.event_id.startswith("event_")
    err = strict(R.error_event(R.RealtimeError(R.E_BAD_AUDIO, "bad", param="audio", event_id="c1")))
    assert (err.error.code, err.error.param, err.error.event_id) == (R.E_BAD_AUDIO, "audio", "c1")
    assert json.loads(R.error_event(R.RealtimeError("draining", "x", retry_after_s=1.0)))["error"]["retry_after_s"] == 1.0
    done = strict(R.transcription_completed("i", "hello", 1.23456))
    assert done.usage.type == "duration" and done.usage.seconds == 1.235


def test_beta_clients_get_the_beta_session_shape():
    doc = json.loads(R.session_event("updated", R.SessionConfig(format=AudioFormat(PCMA, 8000), beta=True), "s", "m"))
    assert doc["type"] == "transcription_session.updated"
    assert doc["session"]["input_audio_format"] == "g711_alaw"


def test_event_ids_are_unique():
    ids = {json.loads(R.cleared())["event_id"] for _ in range(1000)}
    assert len(ids) == 1000


def test_deltas_only_append():
    assert R.delta("", "front") == "front"
    assert R.delta("front", "front center") == " center"
    assert R.delta("front center", "front center") == ""
    assert R.delta("front", "rear") == ""          # never rewrites what the client has


def test_items_are_numbered_and_chained():
    items = R.Items("abc")
    first, second = items.new(), items.new()
    assert first != second and first.startswith("item_abc_")
    assert items.commit(first) is None
    assert items.commit(second) == first
