"""The wire protocol: validate what a client sends, build what the gateway sends back.

Pure functions only, so every bad input has a unit test without a server. The protocol
itself is described in `speechops_worker.gateway` (the package docstring).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from speechops_worker.audio_codec import G711_RATE, PCM16, PCM_RATES, PCMA, PCMU, AudioFormat

SAMPLE_RATE = 16000              # what the models read; other rates are resampled to it
ENCODING = "pcm_s16le"
# Native encoding names -> audio_codec's; G.711 (telephony) is 8 kHz only.
ENCODINGS = {ENCODING: PCM16, "mulaw": PCMU, "alaw": PCMA}

# Error codes a client can act on. Each error event is followed by `closed`.
E_BAD_JSON = "invalid_json"
E_BAD_MESSAGE = "invalid_message"
E_UNKNOWN_PIPELINE = "unknown_pipeline"
E_SAMPLE_RATE = "unsupported_sample_rate"
E_ENCODING = "unsupported_encoding"
E_BAD_OPTION = "invalid_option"
E_NOT_STARTED = "not_started"
E_ALREADY_STARTED = "already_started"
E_ODD_FRAME = "odd_frame_length"
E_FRAME_TOO_BIG = "frame_too_large"
E_OVER_CAPACITY = "over_capacity"
E_DRAINING = "draining"
E_TRITON = "inference_unavailable"
E_SLOW_CONSUMER = "slow_consumer"
E_INTERNAL = "internal_error"
E_UNKNOWN_FIELD = "unknown_field"


class ProtocolError(Exception):
    """A client mistake: becomes an `error` event, then the stream is closed."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class StreamOptions:
    """Per-stream knobs a client may set in `start.options`; None means the pipeline's value."""
    partial_interval_s: float | None = None
    partials: bool = True
    vad_probs: bool = False         # one `vad` event per 32 ms chunk with its probability
    prompt: str = ""                # extra vocabulary prompt for ASR


@dataclass(frozen=True)
class StartRequest:
    pipeline: str
    sample_rate: int
    encoding: str
    options: StreamOptions = field(default_factory=StreamOptions)

    @property
    def audio_format(self) -> AudioFormat:
        return AudioFormat(ENCODINGS[self.encoding], self.sample_rate)


_OPTION_KEYS = {"partial_interval_ms", "partials", "vad_probs", "prompt"}
_START_KEYS = {"type", "pipeline", "sample_rate", "encoding", "options"}


def parse_control(text: str) -> dict[str, Any]:
    """A text frame -> its JSON object, or ProtocolError naming what is wrong."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(E_BAD_JSON, f"control message is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:     # thousands of nested brackets: found by the fuzz test
        raise ProtocolError(E_BAD_JSON, "control message is nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise ProtocolError(E_BAD_MESSAGE, 'control message must be a JSON object with a string "type"')
    if doc["type"] not in ("start", "commit", "stop"):
        raise ProtocolError(E_BAD_MESSAGE, f'unknown message type {doc["type"]!r}; expected "start", "commit" or "stop"')
    return doc


def parse_start(doc: Mapping[str, Any], pipelines: Mapping[str, Any], default_pipeline: str | None) -> StartRequest:
    """A `start` message -> StartRequest. Every field is checked, the first problem raised."""
    pipeline = doc.get("pipeline", default_pipeline)
    if not isinstance(pipeline, str) or pipeline not in pipelines:
        known = ", ".join(sorted(pipelines)) or "none"
        raise ProtocolError(E_UNKNOWN_PIPELINE, f"unknown pipeline {pipeline!r}; this gateway serves: {known}")
    unknown = set(doc) - _START_KEYS
    if unknown:
        raise ProtocolError(E_UNKNOWN_FIELD, f"unknown start fields {sorted(unknown)}; known: {sorted(_START_KEYS)}")
    encoding = doc.get("encoding", ENCODING)
    if not isinstance(encoding, str) or encoding not in ENCODINGS:     # a list is unhashable: fuzz-found
        raise ProtocolError(E_ENCODING, f"encoding must be one of {sorted(ENCODINGS)} ({ENCODING}: 16-bit "
                                        f"little-endian PCM; mulaw, alaw: G.711 at 8000 Hz), got {encoding!r}")
    # The pipeline's spec.streams.sampleRate unless the stream says otherwise.
    streams = getattr(getattr(pipelines[pipeline], "spec", None), "streams", None)
    rate = doc.get("sample_rate", G711_RATE if encoding != ENCODING else getattr(streams, "sample_rate", SAMPLE_RATE))
    rates = PCM_RATES if encoding == ENCODING else (G711_RATE,)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in rates:
        raise ProtocolError(E_SAMPLE_RATE, f"sample_rate for {encoding} must be one of {list(rates)} (mono), got "
                                           f"{rate!r}; other audio: resample first, e.g. `sox in.wav -r 16000 -c 1 "
                                           f"-b 16 out.wav`")
    raw = doc.get("options", {})
    if not isinstance(raw, dict):
        raise ProtocolError(E_BAD_OPTION, "options must be a JSON object")
    unknown = set(raw) - _OPTION_KEYS
    if unknown:
        raise ProtocolError(E_BAD_OPTION, f"unknown options {sorted(unknown)}; known: {sorted(_OPTION_KEYS)}")
    interval = raw.get("partial_interval_ms")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                 or not 50 <= interval <= 10_000):
        raise ProtocolError(E_BAD_OPTION, f"partial_interval_ms must be a number between 50 and 10000, got {interval!r}")
    for key in ("partials", "vad_probs"):
        if key in raw and not isinstance(raw[key], bool):
            raise ProtocolError(E_BAD_OPTION, f"{key} must be true or false, got {raw[key]!r}")
    prompt = raw.get("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > 500:
        raise ProtocolError(E_BAD_OPTION, "prompt must be a string of at most 500 characters")
    return StartRequest(
        pipeline=pipeline, sample_rate=rate, encoding=encoding,
        options=StreamOptions(
            partial_interval_s=None if interval is None else interval / 1000.0,
            partials=raw.get("partials", True),
            vad_probs=raw.get("vad_probs", False),
            prompt=prompt,
        ),
    )


def check_frame(size: int, max_bytes: int, fmt: AudioFormat = AudioFormat()) -> None:
    """A binary frame's length: whole samples, and not more than `max_bytes` of 16 kHz
    PCM16 (scaled to the stream's format: the same duration)."""
    if size % fmt.bytes_per_sample:
        raise ProtocolError(E_ODD_FRAME, f"binary frame has {size} bytes; PCM16 frames must have an even length")
    limit = max_bytes * fmt.rate * fmt.bytes_per_sample // (SAMPLE_RATE * 2)
    if size > limit:
        raise ProtocolError(E_FRAME_TOO_BIG, f"binary frame has {size} bytes; the limit is {limit} "
                                             f"({max_bytes // 2 / SAMPLE_RATE * 1000:.0f} ms); send 20-100 ms frames")


def event(kind: str, **fields: Any) -> bytes:
    """One server event as UTF-8 JSON; `server_time` lets clients measure one-way delays."""
    fields["type"] = kind
    fields["server_time"] = round(time.time(), 4)
    return json.dumps(fields, separators=(",", ":")).encode()


def error_fields(code: str, message: str, retry_after_s: float | None = None) -> dict[str, Any]:
    if retry_after_s is None:
        return {"code": code, "message": message}
    return {"code": code, "message": message, "retry_after_s": retry_after_s}


def error_event(code: str, message: str, retry_after_s: float | None = None) -> bytes:
    return event("error", **error_fields(code, message, retry_after_s))
