"""Hostile client messages for both protocols, from a seeded random generator.

Each generator returns one *stream*: a list of frames (str for text, bytes for binary)
and whether it is bad, i.e. must end with an `error` and a close. Streams that are odd
but legal (interleaved commits and clears, events of the conversation API) are not bad:
they must neither crash nor leave anything behind.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass

Frame = str | bytes


@dataclass
class Stream:
    frames: list[Frame]
    bad: bool
    kind: str


def _junk_text(rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 80)))
    if choice == 1:
        return '{"type": "input_audio_buffer.append", "audio": "AAAA'[: rng.randrange(1, 50)]
    if choice == 2:
        return "[" * rng.randrange(1, 5000)
    if choice == 3:
        return json.dumps(rng.choice([1, "x", None, [1, 2], 1e308, True]))
    if choice == 4:
        return '{"type": ' + str(rng.choice([1, "null", "[]", "{}", "true"])) + "}"
    return "\ud800"                     # a lone surrogate: not encodable as UTF-8 by a well-behaved client


def _value(rng: random.Random):
    return rng.choice([None, True, 0, -1, 3.5, 1e300, "", "x" * rng.randrange(0, 300), [], [1, "a"], {}, {"k": 1},
                       "audio/pcm", "server_vad", 24000])


def _mutate(rng: random.Random, doc):
    """One random change deep in a JSON document: a value replaced, a key removed or added."""
    if isinstance(doc, dict) and doc:
        key = rng.choice(list(doc))
        roll = rng.random()
        if roll < 0.3:
            out = dict(doc)
            out[key] = _value(rng)
            return out
        if roll < 0.45:
            out = dict(doc)
            del out[key]
            return out
        if roll < 0.6:
            out = dict(doc)
            out[rng.choice(["extra", "voice", "tools", "x" * 40, ""])] = _value(rng)
            return out
        out = dict(doc)
        out[key] = _mutate(rng, doc[key])
        return out
    if isinstance(doc, list) and doc:
        out = list(doc)
        i = rng.randrange(len(out))
        out[i] = _mutate(rng, out[i])
        return out
    return _value(rng)


GOOD_UPDATE = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500},
    "noise_reduction": None}}}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def realtime_stream(rng: random.Random, max_append_b64: int) -> Stream:
    """One hostile (or odd) realtime session."""
    kind = rng.choice(["junk", "mutated_update", "bad_audio", "huge_audio", "unknown_event", "wrong_types",
                       "binary", "interleaved", "conversation", "update_after_audio"])
    prefix: list[Frame] = [json.dumps(GOOD_UPDATE)] if rng.random() < 0.5 else []
    noise = _b64(bytes(rng.randrange(256) & 0xFE for _ in range(rng.randrange(2, 64, 2))))
    if kind == "junk":
        return Stream(prefix + [_junk_text(rng)], True, kind)
    if kind == "mutated_update":
        doc = GOOD_UPDATE
        for _ in range(rng.randrange(1, 4)):
            doc = _mutate(rng, doc)
        # Some mutations leave a valid update (e.g. a threshold of 0.5 replaced by 24000
        # is bad, a removed format is fine): whether it is bad is for the gateway to say;
        # the test checks that bad ones close and good ones do not crash.
        return Stream(prefix + [json.dumps(doc)], None, kind)  # type: ignore[arg-type]
    if kind == "bad_audio":
        audio = rng.choice(["!!!!", "AAA", "A===", 12, None, ["AAAA"], "\u00e9\u00e9\u00e9\u00e9"])
        return Stream(prefix + [json.dumps({"type": "input_audio_buffer.append", "audio": audio})], True, kind)
    if kind == "huge_audio":
        return Stream(prefix + [json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (max_append_b64 + 4)})],
                      True, kind)
    if kind == "unknown_event":
        name = rng.choice(["session.delete", "input_audio_buffer.flush", "", "x" * 200, "response"])
        return Stream(prefix + [json.dumps({"type": name})], True, kind)
    if kind == "wrong_types":
        doc = {"type": rng.choice(["input_audio_buffer.commit", "input_audio_buffer.append", "session.update"]),
               "event_id": rng.choice([1, [], {}, "x" * 200, "\n"]), "audio": noise, "session": {"type": "transcription"}}
        return Stream(prefix + [json.dumps(doc)], True, kind)
    if kind == "binary":
        return Stream(prefix + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))], True, kind)
    if kind == "interleaved":
        frames = list(prefix)
        for _ in range(rng.randrange(1, 8)):
            frames.append(json.dumps(rng.choice([
                {"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.clear"},
                {"type": "input_audio_buffer.append", "audio": noise}])))
        return Stream(frames, False, kind)
    if kind == "conversation":
        return Stream(prefix + [json.dumps({"type": rng.choice(["response.create", "conversation.item.create",
                                                                  "response.cancel"])})], False, kind)
    # update_after_audio: changing the format once audio arrived is refused.
    return Stream([json.dumps(GOOD_UPDATE), json.dumps({"type": "input_audio_buffer.append", "audio": noise}),
                   json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                       "input": {"format": {"type": "audio/pcmu"}}}}})], True, kind)


def native_stream(rng: random.Random, max_frame_bytes: int) -> Stream:
    """One hostile native session."""
    kind = rng.choice(["junk", "mutated_start", "audio_before_start", "odd_frame", "huge_frame", "unknown_type",
                       "double_start", "stop_before_start"])
    start = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "options": {"partials": True}}
    if kind == "junk":
        return Stream([_junk_text(rng)], True, kind)
    if kind == "mutated_start":
        doc = start
        for _ in range(rng.randrange(1, 4)):
            doc = _mutate(rng, doc)
        return Stream([json.dumps(doc)], None, kind)  # type: ignore[arg-type]
    if kind == "audio_before_start":
        return Stream([bytes(640)], True, kind)
    if kind == "odd_frame":
        return Stream([json.dumps(start), bytes(rng.randrange(1, 1000, 2))], True, kind)
    if kind == "huge_frame":
        return Stream([json.dumps(start), bytes(max_frame_bytes + 2)], True, kind)
    if kind == "unknown_type":
        return Stream([json.dumps({"type": rng.choice(["begin", "", "STOP", "x" * 100])})], True, kind)
    if kind == "double_start":
        return Stream([json.dumps(start), json.dumps(start)], True, kind)
    return Stream([json.dumps({"type": rng.choice(["stop", "commit"])})], True, kind)
