"""The OpenAI Realtime transcription protocol: client events in, server events out.

Pure functions and values only (no socket, no session), so every bad input has a unit
test without a server; the gateway's realtime connection drives a session with them.

What is served (``/v1/realtime?intent=transcription``):

- client events ``session.update`` with ``session.type: "transcription"`` (and the beta
  ``transcription_session.update`` shape), ``input_audio_buffer.append`` / ``.commit`` /
  ``.clear``;
- input formats ``audio/pcm`` (PCM16 at 24 kHz; 8, 16 and 48 kHz too, a speechops
  extension), ``audio/pcmu`` and ``audio/pcma`` (G.711 at 8 kHz);
- ``turn_detection`` ``server_vad`` (threshold, prefix_padding_ms, silence_duration_ms
  become the VAD stage's parameters) or ``null`` (the client commits turns).

What the protocol has and speechops does not do (responses, conversation items,
semantic VAD, noise reduction, logprobs, ...) is answered with an ``error``, never
silently ignored. Errors that leave the session usable (an empty commit, an event for
the conversation model) keep it open, as the protocol's own server does; malformed or
hostile input and refused session settings end the stream: ``error``, then close.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from speechops_worker.audio_codec import G711_RATE, PCM16, PCM_RATES, PCMA, PCMU, AudioFormat
from speechops_worker.gateway.segmenter import VadParams

PATH = "/v1/realtime"
CHUNK_MS = 32                    # one VAD chunk: what the VAD parameters are counted in
DEFAULT_FORMAT = AudioFormat(PCM16, 24000)

# Stable error codes (error.code). Codes of the protocol's own server are kept where
# one exists (input_audio_buffer_commit_empty, unknown_parameter, invalid_value).
E_BAD_JSON = "invalid_json"
E_BAD_EVENT = "invalid_event"              # not an object, no string type, wrong field types
E_UNKNOWN_EVENT = "unknown_event"
E_UNSUPPORTED_EVENT = "unsupported_event"  # an event of the conversation (speech-to-speech) API
E_UNKNOWN_PARAMETER = "unknown_parameter"
E_BAD_VALUE = "invalid_value"
E_UNSUPPORTED = "unsupported_feature"      # a setting speechops cannot honour
E_SESSION_TYPE = "unsupported_session_type"
E_UNKNOWN_MODEL = "unknown_model"
E_LOCKED = "session_locked"                # format or turn detection changed after audio arrived
E_BAD_AUDIO = "invalid_audio"
E_AUDIO_TOO_LARGE = "audio_too_large"
E_COMMIT_EMPTY = "input_audio_buffer_commit_empty"

# Events of the speech-to-speech conversation API: known, refused, the session goes on.
CONVERSATION_EVENTS = frozenset({
    "conversation.item.create", "conversation.item.delete", "conversation.item.retrieve",
    "conversation.item.truncate", "response.create", "response.cancel", "output_audio_buffer.clear",
})
CLIENT_EVENTS = frozenset({"session.update", "transcription_session.update", "input_audio_buffer.append",
                           "input_audio_buffer.commit", "input_audio_buffer.clear"}) | CONVERSATION_EVENTS

# OpenAI's transcription models: an app that names one is served by the pipeline's ASR,
# so pointing it at speechops takes a base URL and nothing else.
OPENAI_MODELS = frozenset({
    "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize", "gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper",
})
BETA_FORMATS = {"pcm16": DEFAULT_FORMAT, "g711_ulaw": AudioFormat(PCMU, G711_RATE),
                "g711_alaw": AudioFormat(PCMA, G711_RATE)}
_EVENT_ID = re.compile(r"[\x20-\x7e]{1,128}")
_LANGUAGE = re.compile(r"[a-z]{2,3}")


class RealtimeError(Exception):
    """An error event. `fatal`: the stream ends after it (error, then close)."""

    def __init__(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None,
                 fatal: bool = True, retry_after_s: float | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.code, self.message, self.param, self.event_id = code, message, param, event_id
        self.fatal, self.retry_after_s, self.kind = fatal, retry_after_s, kind


# ---------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class TurnDetection:
    """server_vad, in the protocol's units."""
    threshold: float = 0.5
    prefix_padding_ms: int = 320
    silence_duration_ms: int = 256


@dataclass(frozen=True)
class SessionConfig:
    format: AudioFormat = DEFAULT_FORMAT
    turn_detection: TurnDetection | None = TurnDetection()
    model: str | None = None            # as the client named it; None: the pipeline's ASR
    language: str | None = None
    prompt: str = ""
    beta: bool = False                  # the client speaks the beta transcription_session shape


def turn_detection_of(vad: VadParams) -> TurnDetection:
    """The gateway's VAD parameters as the protocol's server_vad settings."""
    return TurnDetection(threshold=vad.threshold, prefix_padding_ms=vad.pre_roll_chunks * CHUNK_MS,
                         silence_duration_ms=vad.min_silence_chunks * CHUNK_MS)


def vad_params(td: TurnDetection, base: VadParams) -> VadParams:
    """server_vad settings -> the VAD stage's parameters (milliseconds -> 32 ms chunks, rounded up)."""
    return replace(base, threshold=td.threshold,
                   pre_roll_chunks=math.ceil(td.prefix_padding_ms / CHUNK_MS),
                   min_silence_chunks=max(1, math.ceil(td.silence_duration_ms / CHUNK_MS)))


def default_config(vad: VadParams) -> SessionConfig:
    return SessionConfig(turn_detection=turn_detection_of(vad))


# ---------------------------------------------------------------------------- client events

@dataclass(frozen=True)
class Update:
    """The settings one session.update named (absent ones are not in `fields`)."""
    fields: Mapping[str, Any]
    event_id: str | None = None
    beta: bool = False


@dataclass(frozen=True)
class Append:
    audio: bytes
    event_id: str | None = None


@dataclass(frozen=True)
class Commit:
    event_id: str | None = None


@dataclass(frozen=True)
class Clear:
    event_id: str | None = None


Command = Update | Append | Commit | Clear


def max_append_b64(max_audio_bytes: int) -> int:
    return (max_audio_bytes + 2) // 3 * 4


def parse_event(text: str | bytes, max_audio_bytes: int) -> Command:
    """One client text frame -> a command, or RealtimeError naming what is wrong."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        where = f": {exc.msg} at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise RealtimeError(E_BAD_JSON, f"client event is not valid JSON{where}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise RealtimeError(E_BAD_EVENT, 'a client event must be a JSON object with a string "type"', param="type")
    event_id = doc.get("event_id")
    if event_id is not None and not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
        raise RealtimeError(E_BAD_EVENT, "event_id must be a printable string of at most 128 characters",
                            param="event_id")
    kind = doc["type"]
    if kind == "input_audio_buffer.append":
        _only(doc, {"type", "event_id", "audio"}, "", event_id)
        return Append(_audio(doc.get("audio"), max_audio_bytes, event_id), event_id)
    if kind in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
        _only(doc, {"type", "event_id"}, "", event_id)
        return Commit(event_id) if kind.endswith("commit") else Clear(event_id)
    if kind == "session.update":
        _only(doc, {"type", "event_id", "session"}, "", event_id)
        return Update(_session_update(doc.get("session"), event_id), event_id)
    if kind == "transcription_session.update":
        _only(doc, {"type", "event_id", "session"}, "", event_id)
        return Update(_beta_update(doc.get("session"), event_id), event_id, beta=True)
    if kind in CONVERSATION_EVENTS:
        raise RealtimeError(E_UNSUPPORTED_EVENT, f"{kind!r} belongs to the conversation API; speechops serves "
                            "transcription sessions only (session.update, input_audio_buffer.*)",
                            param="type", event_id=event_id, fatal=False)
    raise RealtimeError(E_UNKNOWN_EVENT, f"unknown client event {kind[:64]!r}; expected one of "
                        f"{', '.join(sorted(CLIENT_EVENTS - CONVERSATION_EVENTS))}", param="type", event_id=event_id)


def _audio(value: Any, max_audio_bytes: int, event_id: str | None) -> bytes:
    if not isinstance(value, str):
        raise RealtimeError(E_BAD_EVENT, "input_audio_buffer.append needs `audio`, a base64 string",
                            param="audio", event_id=event_id)
    if len(value) > max_append_b64(max_audio_bytes):
        raise RealtimeError(E_AUDIO_TOO_LARGE, f"one append carries at most {max_audio_bytes} bytes of audio "
                            f"({max_append_b64(max_audio_bytes)} base64 characters), got {len(value)} characters; "
                            "append 20-500 ms at a time", param="audio", event_id=event_id)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError(E_BAD_AUDIO, "audio is not valid base64", param="audio", event_id=event_id) from None


def _only(doc: Mapping, allowed: set[str], path: str, event_id: str | None) -> None:
    unknown = sorted(k for k in doc if k not in allowed)
    if unknown:
        name = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RealtimeError(E_UNKNOWN_PARAMETER, f"unknown parameter {name[:128]!r}", param=name[:128],
                            event_id=event_id)


def _object(value: Any, path: str, event_id: str | None, nullable: bool = False) -> dict | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise RealtimeError(E_BAD_EVENT, f"{path} must be an object{' or null' if nullable else ''}",
                            param=path, event_id=event_id)
    return value


def _unsupported(path: str, what: str, event_id: str | None) -> RealtimeError:
    return RealtimeError(E_UNSUPPORTED, f"{path}: {what}", param=path, event_id=event_id)


def _session_update(session: Any, event_id: str | None) -> dict[str, Any]:
    s = _object(session, "session", event_id)
    # id/object/expires_at: a client may send back the session object it was given.
    _only(s, {"type", "audio", "include", "id", "object", "expires_at"}, "session", event_id)
    if s.get("type") != "transcription":
        raise RealtimeError(E_SESSION_TYPE, f"session.type must be \"transcription\", got {s.get('type')!r}: "
                            "speechops transcribes; it has no conversation model", param="session.type",
                            event_id=event_id)
    fields: dict[str, Any] = {}
    _include(s.get("include"), "session.include", event_id)
    if "audio" not in s:
        return fields
    audio = _object(s["audio"], "session.audio", event_id)
    _only(audio, {"input"}, "session.audio", event_id)
    if "input" not in audio:
        return fields
    inp = _object(audio["input"], "session.audio.input", event_id)
    _only(inp, {"format", "transcription", "turn_detection", "noise_reduction"}, "session.audio.input", event_id)
    p = "session.audio.input"
    if "format" in inp:
        fields["format"] = _format(inp["format"], f"{p}.format", event_id)
    if "transcription" in inp:
        fields.update(_transcription(inp["transcription"], f"{p}.transcription", event_id))
    if "turn_detection" in inp:
        fields["turn_detection"] = _turn_detection(inp["turn_detection"], f"{p}.turn_detection", event_id)
    _noise_reduction(inp.get("noise_reduction"), f"{p}.noise_reduction", event_id)
    return fields


def _beta_update(session: Any, event_id: str | None) -> dict[str, Any]:
    s = _object(session, "session", event_id)
    _only(s, {"input_audio_format", "input_audio_transcription", "turn_detection", "input_audio_noise_reduction",
              "include", "modalities", "id", "object", "expires_at"}, "session", event_id)
    fields: dict[str, Any] = {}
    if "input_audio_format" in s:
        fmt = s["input_audio_format"]
        if fmt not in BETA_FORMATS:
            raise RealtimeError(E_BAD_VALUE, f"session.input_audio_format must be one of {sorted(BETA_FORMATS)}, "
                                f"got {str(fmt)[:64]!r}", param="session.input_audio_format", event_id=event_id)
        fields["format"] = BETA_FORMATS[fmt]
    if "input_audio_transcription" in s:
        fields.update(_transcription(s["input_audio_transcription"], "session.input_audio_transcription", event_id))
    if "turn_detection" in s:
        fields["turn_detection"] = _turn_detection(s["turn_detection"], "session.turn_detection", event_id)
    _noise_reduction(s.get("input_audio_noise_reduction"), "session.input_audio_noise_reduction", event_id)
    _include(s.get("include"), "session.include", event_id)
    modalities = s.get("modalities")
    if modalities is not None and not (isinstance(modalities, list) and set(modalities) <= {"text", "audio"}):
        raise RealtimeError(E_BAD_VALUE, 'session.modalities must be a list of "text" and "audio"',
                            param="session.modalities", event_id=event_id)
    return fields


def _include(value: Any, path: str, event_id: str | None) -> None:
    if value is None or value == []:
        return
    if not isinstance(value, list):
        raise RealtimeError(E_BAD_EVENT, f"{path} must be a list", param=path, event_id=event_id)
    raise _unsupported(path, "speechops does not return logprobs; send no include", event_id)


def _noise_reduction(value: Any, path: str, event_id: str | None) -> None:
    if value is not None:
        raise _unsupported(path, "speechops does not filter noise; set it to null (VAD and ASR take the audio "
                           "as sent)", event_id)


def _format(value: Any, path: str, event_id: str | None) -> AudioFormat:
    f = _object(value, path, event_id)
    _only(f, {"type", "rate"}, path, event_id)
    kind, rate = f.get("type"), f.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)):
        raise RealtimeError(E_BAD_EVENT, f"{path}.rate must be an integer", param=f"{path}.rate", event_id=event_id)
    if kind == "audio/pcm":
        if rate is not None and rate not in PCM_RATES:
            raise RealtimeError(E_BAD_VALUE, f"{path}.rate must be one of {list(PCM_RATES)} (24000 is the "
                                f"protocol's), got {rate}", param=f"{path}.rate", event_id=event_id)
        return AudioFormat(PCM16, rate or 24000)
    if kind in ("audio/pcmu", "audio/pcma"):
        if rate is not None and rate != G711_RATE:
            raise RealtimeError(E_BAD_VALUE, f"{kind} is 8000 Hz, got rate {rate}", param=f"{path}.rate",
                                event_id=event_id)
        return AudioFormat(PCMU if kind == "audio/pcmu" else PCMA, G711_RATE)
    raise RealtimeError(E_BAD_VALUE, f"{path}.type must be audio/pcm, audio/pcmu or audio/pcma, got "
                        f"{str(kind)[:64]!r}", param=f"{path}.type", event_id=event_id)


def _transcription(value: Any, path: str, event_id: str | None) -> dict[str, Any]:
    t = _object(value, path, event_id, nullable=True)
    if t is None:
        raise _unsupported(path, "a transcription session always transcribes; it cannot be turned off", event_id)
    _only(t, {"model", "language", "prompt", "keywords", "languages", "delay"}, path, event_id)
    out: dict[str, Any] = {}
    for key in ("model", "language", "prompt"):
        if key in t and t[key] is not None and not isinstance(t[key], str):
            raise RealtimeError(E_BAD_EVENT, f"{path}.{key} must be a string", param=f"{path}.{key}",
                                event_id=event_id)
    if t.get("model") is not None:
        if not 0 < len(t["model"]) <= 128:
            raise RealtimeError(E_BAD_VALUE, f"{path}.model must be 1-128 characters", param=f"{path}.model",
                                event_id=event_id)
        out["model"] = t["model"]
    if t.get("language") is not None:
        if not _LANGUAGE.fullmatch(t["language"]):
            raise RealtimeError(E_BAD_VALUE, f"{path}.language must be an ISO-639-1 code such as \"en\"",
                                param=f"{path}.language", event_id=event_id)
        out["language"] = t["language"]
    languages = t.get("languages")
    if languages is not None:
        if not (isinstance(languages, list) and all(isinstance(x, str) and _LANGUAGE.fullmatch(x) for x in languages)
                and len(languages) == 1):
            raise _unsupported(f"{path}.languages", "speechops decodes one language a session; name it in "
                               "`language`", event_id)
        out["language"] = languages[0]
    words: list[str] = []
    if t.get("prompt"):
        words.append(t["prompt"])
    keywords = t.get("keywords")
    if keywords is not None:
        if not (isinstance(keywords, list) and all(isinstance(k, str) for k in keywords)):
            raise RealtimeError(E_BAD_EVENT, f"{path}.keywords must be a list of strings",
                                param=f"{path}.keywords", event_id=event_id)
        words.extend(keywords)
    if "prompt" in t or keywords is not None:
        prompt = " ".join(words)
        if len(prompt) > 500:
            raise RealtimeError(E_BAD_VALUE, f"{path}.prompt and keywords: at most 500 characters together",
                                param=f"{path}.prompt", event_id=event_id)
        out["prompt"] = prompt
    if t.get("delay") is not None:
        raise _unsupported(f"{path}.delay", "speechops paces partials by the pipeline's partialInterval; send "
                           "no delay", event_id)
    return out


def _turn_detection(value: Any, path: str, event_id: str | None) -> dict[str, Any] | None:
    td = _object(value, path, event_id, nullable=True)
    if td is None:
        return None
    kind = td.get("type")
    if kind == "semantic_vad":
        raise _unsupported(f"{path}.type", "semantic_vad needs a turn model speechops does not run; use "
                           "server_vad or null", event_id)
    if kind != "server_vad":
        raise RealtimeError(E_BAD_VALUE, f"{path}.type must be \"server_vad\" (or turn_detection null), got "
                            f"{str(kind)[:64]!r}", param=f"{path}.type", event_id=event_id)
    _only(td, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
               "interrupt_response", "idle_timeout_ms"}, path, event_id)
    for key in ("create_response", "interrupt_response"):
        # Both are about responses, which a transcription session never makes: either
        # value asks for nothing, as on the protocol's own server.
        if td.get(key) is not None and not isinstance(td[key], bool):
            raise RealtimeError(E_BAD_EVENT, f"{path}.{key} must be true or false", param=f"{path}.{key}",
                                event_id=event_id)
    if td.get("idle_timeout_ms") is not None:
        raise _unsupported(f"{path}.idle_timeout_ms", "a transcription session creates no responses; the "
                           "pipeline's streams.idleTimeout ends idle streams", event_id)
    out: dict[str, Any] = {}
    for key, lo, hi, integer in (("threshold", 0.0, 1.0, False), ("prefix_padding_ms", 0, 2000, True),
                                 ("silence_duration_ms", 32, 10_000, True)):
        v = td.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
            raise RealtimeError(E_BAD_EVENT, f"{path}.{key} must be {'an integer' if integer else 'a number'}",
                                param=f"{path}.{key}", event_id=event_id)
        if not lo <= v <= hi or (key == "threshold" and not 0 < v < 1):
            bounds = "strictly between 0 and 1" if key == "threshold" else f"between {lo} and {hi}"
            raise RealtimeError(E_BAD_VALUE, f"{path}.{key} must be {bounds}, got {v}", param=f"{path}.{key}",
                                event_id=event_id)
        out[key] = int(v) if integer else float(v)
    return out


def apply_update(config: SessionConfig, update: Update, *, audio_started: bool, pipelines: Mapping[str, Any],
                 languages: tuple[str, ...] | None = ("en",)) -> SessionConfig:
    """The session's settings after `update`, or RealtimeError (the settings stay as they were).

    `pipelines`: the names this gateway serves (a transcription model may name one);
    `languages`: what the pipeline's ASR decodes (None: any)."""
    f = update.fields
    new = replace(config, beta=update.beta)
    if "format" in f:
        new = replace(new, format=f["format"])
    if "turn_detection" in f:
        td = f["turn_detection"]
        if td is None:
            new = replace(new, turn_detection=None)
        else:
            new = replace(new, turn_detection=replace(config.turn_detection or TurnDetection(), **td))
    if "model" in f:
        model = f["model"]
        if model not in pipelines and model not in OPENAI_MODELS:
            raise RealtimeError(E_UNKNOWN_MODEL, f"unknown transcription model {model!r}; name a pipeline this "
                                f"gateway serves ({', '.join(sorted(pipelines)) or 'none'}) or an OpenAI "
                                "transcription model (served by the pipeline's ASR)",
                                param="session.audio.input.transcription.model", event_id=update.event_id)
        new = replace(new, model=model)
    if "language" in f:
        if languages is not None and f["language"] not in languages:
            raise _unsupported("session.audio.input.transcription.language",
                               f"this pipeline decodes {', '.join(languages)}, not {f['language']!r}", update.event_id)
        new = replace(new, language=f["language"])
    if "prompt" in f:
        new = replace(new, prompt=f["prompt"])
    if audio_started and (new.format != config.format or new.turn_detection != config.turn_detection):
        raise RealtimeError(E_LOCKED, "the audio format and turn detection are fixed once audio has arrived; open "
                            "a new session to change them", param="session.audio.input", event_id=update.event_id)
    if audio_started and new.model != config.model and (new.model in pipelines or config.model in pipelines):
        raise RealtimeError(E_LOCKED, "the pipeline is fixed once audio has arrived; open a new session to change "
                            "it", param="session.audio.input.transcription.model", event_id=update.event_id)
    return new


def pipeline_for(config: SessionConfig, query_model: str | None, pipelines: Mapping[str, Any],
                 default: str | None) -> str:
    """Which pipeline serves the session: a transcription model or `?model=` naming one,
    else the gateway's default."""
    for name in (config.model, query_model):
        if name in pipelines:
            return name
    if default is None:
        raise RealtimeError(E_UNKNOWN_MODEL, f"this gateway serves several pipelines "
                            f"({', '.join(sorted(pipelines))}); name one as the transcription model or ?model=",
                            param="session.audio.input.transcription.model")
    return default


# ---------------------------------------------------------------------------- server events

_PREFIX = os.urandom(3).hex()
_SEQ = itertools.count(1)


def event_id() -> str:
    return f"event_{_PREFIX}{next(_SEQ):x}"


def server_event(kind: str, **fields: Any) -> bytes:
    fields["type"] = kind
    fields["event_id"] = event_id()
    return json.dumps(fields, separators=(",", ":")).encode()


def session_object(config: SessionConfig, session_id: str, model: str) -> dict[str, Any]:
    """The session as the protocol describes it (GA or beta shape, as the client speaks)."""
    td = None if config.turn_detection is None else {
        "type": "server_vad", "threshold": config.turn_detection.threshold,
        "prefix_padding_ms": config.turn_detection.prefix_padding_ms,
        "silence_duration_ms": config.turn_detection.silence_duration_ms}
    transcription = {"model": config.model or model, "language": config.language, "prompt": config.prompt}
    fmt = config.format
    if config.beta:
        beta_format = next((k for k, v in BETA_FORMATS.items() if v == fmt), None)
        return {"id": session_id, "object": "realtime.transcription_session", "input_audio_format": beta_format,
                "input_audio_transcription": transcription, "turn_detection": td,
                "input_audio_noise_reduction": None, "include": [], "modalities": ["text"]}
    wire = {"type": {PCM16: "audio/pcm", PCMU: "audio/pcmu", PCMA: "audio/pcma"}[fmt.encoding]}
    if fmt.encoding == PCM16:
        wire["rate"] = fmt.rate
    return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
            "audio": {"input": {"format": wire, "transcription": transcription, "turn_detection": td,
                                "noise_reduction": None}},
            "include": []}


def session_event(kind: str, config: SessionConfig, session_id: str, model: str) -> bytes:
    """kind: "created" or "updated"."""
    prefix = "transcription_session" if config.beta else "session"
    return server_event(f"{prefix}.{kind}", session=session_object(config, session_id, model))


def error_event(err: RealtimeError) -> bytes:
    body: dict[str, Any] = {"type": err.kind, "code": err.code, "message": err.message, "param": err.param,
                            "event_id": err.event_id}
    if err.retry_after_s is not None:
        body["retry_after_s"] = err.retry_after_s
    return server_event("error", error=body)


def speech_started(item_id: str, audio_start_ms: int) -> bytes:
    return server_event("input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms)


def speech_stopped(item_id: str, audio_end_ms: int) -> bytes:
    return server_event("input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=audio_end_ms)


def committed(item_id: str, previous_item_id: str | None) -> bytes:
    return server_event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def cleared() -> bytes:
    return server_event("input_audio_buffer.cleared")


def transcription_delta(item_id: str, delta: str) -> bytes:
    return server_event("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                        delta=delta)


def transcription_completed(item_id: str, transcript: str, audio_s: float) -> bytes:
    return server_event("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                        transcript=transcript, usage={"type": "duration", "seconds": round(audio_s, 3)})


def transcription_failed(item_id: str, code: str, message: str) -> bytes:
    return server_event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                        error={"type": "server_error", "code": code, "message": message})


def delta(sent: str, stable: str) -> str:
    """What to append to the text a client already has so it reads `stable`.

    Partials' stable words only ever grow (the final starts with them), so deltas are
    append-only as the protocol requires; "" when nothing new is stable."""
    if not stable.startswith(sent) or len(stable) == len(sent):
        return ""
    return stable[len(sent):] if sent else stable


@dataclass
class Items:
    """Item ids of one session's turns, in order, and the last one committed."""
    prefix: str
    count: int = 0
    last_committed: str | None = None

    def new(self) -> str:
        self.count += 1
        return f"item_{self.prefix}_{self.count}"

    def commit(self, item: str) -> str | None:
        """Marks `item` committed; returns the item committed before it (previous_item_id)."""
        previous, self.last_committed = self.last_committed, item
        return previous
