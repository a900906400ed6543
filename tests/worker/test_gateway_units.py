"""The gateway's pure parts: protocol validation, framing, VAD segmentation, stable
partials, packing, degradation decisions, pipeline plans. No server, no Triton."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from speechops_contract.api import SpecError, parse_spec
from speechops_worker.gateway import protocol as P
from speechops_worker.gateway.framing import Framer
from speechops_worker.gateway.packer import Packer, concat_parts, split_outputs
from speechops_worker.gateway.pipeline import plan, run_stages
from speechops_worker.gateway.segmenter import Segmenter, VadParams
from speechops_worker.gateway.admission import Admission, Load
from speechops_worker.gateway.degrade import decide_level
from speechops_worker.gateway.server import GatewayConfig
from speechops_worker.gateway.transcript import extend_committed, final_text, word_error_rate, words

PIPELINES = {"default": object()}


# ------------------------------------------------------------------ protocol

@pytest.mark.parametrize("text, code", [
    ("{not json", P.E_BAD_JSON),
    ("[" * 100_000, P.E_BAD_JSON),
    ("[1, 2]", P.E_BAD_MESSAGE),
    ('{"type": 3}', P.E_BAD_MESSAGE),
    ('{"type": "hello"}', P.E_BAD_MESSAGE),
], ids=["broken-json", "nested-too-deep", "not-an-object", "type-not-string", "unknown-type"])
def test_bad_control_messages_are_named(text, code):
    with pytest.raises(P.ProtocolError) as err:
        P.parse_control(text)
    assert err.value.code == code


@pytest.mark.parametrize("start, code", [
    ({"pipeline": "nope"}, P.E_UNKNOWN_PIPELINE),
    ({"sample_rate": 44100}, P.E_SAMPLE_RATE),
    ({"sample_rate": 16000.0}, P.E_SAMPLE_RATE),
    ({"encoding": []}, P.E_ENCODING),
    ({"sample_rate": "16000"}, P.E_SAMPLE_RATE),
    ({"encoding": "alaw", "sample_rate": 16000}, P.E_SAMPLE_RATE),
    ({"encoding": "opus"}, P.E_ENCODING),
    ({"language": "en"}, P.E_UNKNOWN_FIELD),
    ({"options": []}, P.E_BAD_OPTION),
    ({"options": {"colour": "red"}}, P.E_BAD_OPTION),
    ({"options": {"partial_interval_ms": 5}}, P.E_BAD_OPTION),
    ({"options": {"partials": "yes"}}, P.E_BAD_OPTION),
    ({"options": {"prompt": "x" * 501}}, P.E_BAD_OPTION),
], ids=["unknown-pipeline", "44khz", "rate-as-float", "encoding-list", "rate-as-string", "alaw-not-8khz", "opus", "unknown-field", "options-list", "unknown-option",
        "interval-too-small", "partials-not-bool", "prompt-too-long"])
def test_bad_start_messages_are_refused_with_their_code(start, code):
    with pytest.raises(P.ProtocolError) as err:
        P.parse_start({"type": "start", "pipeline": "default", **start}, PIPELINES, None)
    assert err.value.code == code
    assert err.value.message


def test_start_defaults_to_the_only_pipeline_and_reads_options():
    req = P.parse_start({"type": "start", "options": {"partial_interval_ms": 250, "prompt": "Triton"}},
                        PIPELINES, "default")
    assert req.pipeline == "default"
    assert req.options.partial_interval_s == 0.25
    assert req.options.prompt == "Triton"


def test_start_takes_the_pipelines_rate_unless_the_stream_names_one():
    from types import SimpleNamespace
    phone = {"p": SimpleNamespace(spec=SimpleNamespace(streams=SimpleNamespace(sample_rate=8000)))}
    assert P.parse_start({"type": "start"}, phone, "p").sample_rate == 8000
    assert P.parse_start({"type": "start", "sample_rate": 48000}, phone, "p").sample_rate == 48000
    assert P.parse_start({"type": "start", "encoding": "mulaw"}, PIPELINES, "default").sample_rate == 8000


@pytest.mark.parametrize("size, code", [(641, P.E_ODD_FRAME), (40_000, P.E_FRAME_TOO_BIG)], ids=["odd", "oversized"])
def test_bad_frames_are_refused(size, code):
    with pytest.raises(P.ProtocolError) as err:
        P.check_frame(size, 32_000)
    assert err.value.code == code


def test_error_event_carries_retry_after():
    doc = json.loads(P.error_event(P.E_OVER_CAPACITY, "full", retry_after_s=2.0))
    assert doc["type"] == "error" and doc["code"] == "over_capacity" and doc["retry_after_s"] == 2.0


# ------------------------------------------------------------------ framing

def test_framer_keeps_every_sample_across_odd_frame_sizes():
    samples = np.arange(5000, dtype=np.int16)
    framer, out = Framer(), []
    raw = samples.tobytes()
    for start in range(0, len(raw), 322):      # 161-sample frames: never aligned to 512
        chunks = framer.push(raw[start:start + 322])
        if chunks is not None:
            out.extend(chunks)
    out.extend(framer.flush())
    joined = np.concatenate(out)
    assert np.array_equal(joined[:5000], samples)
    assert np.all(joined[5000:] == 0) and len(joined) % 512 == 0


# ------------------------------------------------------------------ VAD segmentation

def run_segmenter(probs, params=VadParams(min_silence_chunks=3, min_speech_chunks=2)):
    seg = Segmenter(params)
    return [(t.kind, t.chunk, t.discard) for p in probs if (t := seg.step(p))] + \
           ([(t.kind, t.chunk, t.discard)] if (t := seg.end()) else [])


@pytest.mark.parametrize("probs, expected", [
    ([0.1] * 10, []),
    ([0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], [("start", 1, False), ("end", 3, False)]),
    ([0.9, 0.9, 0.2, 0.9, 0.9, 0.1, 0.1, 0.1], [("start", 0, False), ("end", 4, False)]),
    ([0.9, 0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.1], [("start", 0, False), ("end", 4, False)]),
    ([0.1, 0.9, 0.1, 0.1, 0.1], [("start", 1, False), ("end", 1, True)]),
    ([0.9, 0.9, 0.9], [("start", 0, False), ("end", 2, False)]),
], ids=["silence", "one-segment", "short-gap-bridged", "hysteresis-keeps-speech", "blip-discarded",
        "ended-by-stream-end"])
def test_segmenter(probs, expected):
    assert run_segmenter(probs) == expected


# ------------------------------------------------------------------ stable partials

def test_committed_words_grow_only_where_three_decodes_agree_before_their_last_word():
    history = []
    shown = []
    for decode in ["the quick", "The quick brown", "the quick brown fox.", "the quick brown fox jumps",
                   "the quick brown fax jumps over"]:
        shown.append(extend_committed(shown[-1] if shown else [], history, words(decode)))
        history = (history + [words(decode)])[-2:]
    assert shown == [[], [], ["the"], ["the", "quick"], ["the", "quick", "brown"]]


def test_a_revised_committed_word_is_never_taken_back():
    committed = ["the", "quick"]
    assert extend_committed(committed, [words("the quick brown"), words("the quick brown")],
                            words("a quick brown fox")) == committed
    # The final keeps what the partials showed and takes the rest from its own decode.
    assert final_text(committed, words("A quick brown fox jumps.")) == "the quick brown fox jumps."


@pytest.mark.parametrize("ref, hyp, wer", [
    ("the quick brown fox", "The quick brown fox.", 0.0),
    ("the quick brown fox", "the quick fox", 0.25),
    ("the quick brown fox", "the quick brown fox jumps", 0.25),
    ("a b c d", "w x y z", 1.0),
], ids=["case-and-punctuation-ignored", "deletion", "insertion", "all-wrong"])
def test_word_error_rate(ref, hyp, wer):
    assert word_error_rate(ref, hyp) == pytest.approx(wer)


# ------------------------------------------------------------------ packing

def test_parts_of_different_widths_are_padded_and_split_back():
    parts = [{"AUDIO": np.ones((1, 3), np.float32), "LENGTH": np.array([3], np.int32)},
             {"AUDIO": np.ones((2, 5), np.float32), "LENGTH": np.array([5, 5], np.int32)}]
    packed = concat_parts(parts)
    assert packed["AUDIO"].shape == (3, 5)
    assert packed["AUDIO"][0].tolist() == [1, 1, 1, 0, 0]
    back = split_outputs({"OUT": np.array([10, 20, 30])}, [1, 2])
    assert [b["OUT"].tolist() for b in back] == [[10], [20, 30]]


def test_the_overload_signal_is_queue_wait_not_answer_time():
    """A slow model that keeps up (one request at a time) shows no wait; rows that arrive
    together are packed into one call, and a row that arrives while the model is busy
    waits in the packer: that wait is the signal."""
    calls = []

    def slow_model(model, inputs, outputs):
        calls.append(len(inputs["X"]))
        time.sleep(0.2)
        return {"Y": inputs["X"] * 2}

    async def scenario():
        packer = Packer("asr", ("Y",), slow_model, window_s=0.0, max_in_flight=1)
        try:
            await packer.submit({"X": np.array([1])})
            alone = packer.recent_wait(horizon_s=5.0)
            together = [packer.submit({"X": np.array([i])}) for i in range(2, 5)]   # one call
            await asyncio.sleep(0.05)
            late = packer.submit({"X": np.array([5])})        # waits ~150 ms for that call
            results = await asyncio.gather(*together, late)
            return alone, max(w for _, w in packer.recent_waits), [r["Y"].tolist() for r in results]
        finally:
            packer.close()

    alone, loaded, results = asyncio.run(scenario())
    assert alone is not None and alone < 0.05
    assert loaded is not None and loaded >= 0.1
    assert results == [[4], [6], [8], [10]]
    assert calls == [1, 3, 1]


# ------------------------------------------------------------------ degradation

CFG = GatewayConfig(triton_url="-", pipelines={}, degrade_after_s=0.3, restore_below_s=0.1,
                    restore_hold_s=2.0, step_hold_s=1.0)


@pytest.mark.parametrize("level, wait, calm_since, last_step, now, expected_level", [
    (0, 0.5, None, 0.0, 10.0, 1),
    (1, 0.5, None, 9.5, 10.0, 1),
    (1, 0.5, None, 8.0, 10.0, 2),
    (2, 0.9, None, 0.0, 10.0, 2),
    (2, 0.05, 7.0, 7.0, 10.0, 1),
    (2, 0.05, 9.0, 7.0, 10.0, 2),
    (1, None, 5.0, 5.0, 10.0, 0),
    (1, 0.2, 5.0, 5.0, 10.0, 1),
], ids=["overload-steps-down", "one-step-per-hold", "still-overloaded-steps-again", "floor-is-level-2",
        "calm-long-enough-steps-up", "calm-too-short", "idle-counts-as-calm", "between-thresholds-holds"])
def test_decide_level(level, wait, calm_since, last_step, now, expected_level):
    assert decide_level(level, wait, calm_since, last_step, now, CFG)[0] == expected_level


# ------------------------------------------------------------------ pipeline plans

def test_default_demo_pipeline_runs_asr_and_stats_in_one_wave():
    spec = parse_spec({"stages": [
        {"name": "vad", "model": "silero_vad"},
        {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"], "fallbackModel": "whisper_asr_greedy"},
        {"name": "stats", "model": "audio_stats", "dependsOn": ["vad"], "optional": True}]})
    p = plan("demo", spec)
    assert p.vad.model == "silero_vad"
    assert [[s.name for s in w] for w in p.waves] == [["asr", "stats"]]
    assert p.models == {"silero_vad", "whisper_asr", "whisper_asr_greedy", "audio_stats"}


@pytest.mark.parametrize("stages, field", [
    ([{"name": "x", "model": "no_such_model"}], "spec.stages[0].model"),
    ([{"name": "v", "model": "silero_vad_seq"}], "spec.stages[0].model"),
    ([{"name": "a", "model": "whisper_asr", "fallbackModel": "audio_stats"}], "spec.stages[0].fallbackModel"),
], ids=["unknown-model", "sequence-model-not-servable", "fallback-of-another-kind"])
def test_pipelines_the_gateway_cannot_serve_are_refused_with_the_field(stages, field):
    with pytest.raises(SpecError) as err:
        plan("p", parse_spec({"stages": stages}))
    assert field in [f for f, _ in err.value.problems]


def test_stages_without_a_declared_dependency_run_beside_asr_not_after_it():
    """The examples' `levels` names no dependency: it runs in asr's wave, not before it."""
    spec = parse_spec({"stages": [
        {"name": "vad", "model": "silero_vad"},
        {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"]},
        {"name": "levels", "model": "audio_stats", "optional": True}]})
    assert [[s.name for s in w] for w in plan("p", spec).waves] == [["asr", "levels"]]


def test_the_stage_dag_starts_each_stage_once_its_dependencies_finished():
    spec = parse_spec({"stages": [
        {"name": "asr", "model": "whisper_asr"},
        {"name": "stats", "model": "audio_stats"},
        {"name": "after", "model": "audio_stats", "dependsOn": ["stats"]}]})
    p = plan("p", spec)
    log = []

    async def run(stage):
        log.append(("start", stage.name))
        await asyncio.sleep({"asr": 0.05, "stats": 0.01, "after": 0.01}[stage.name])
        log.append(("end", stage.name))
        return {"name": stage.name}

    results = asyncio.run(run_stages(tuple(s for w in p.waves for s in w), run))
    assert list(results) == ["asr", "stats", "after"]
    assert log[:2] == [("start", "asr"), ("start", "stats")]             # concurrently
    assert log.index(("start", "after")) < log.index(("end", "asr"))      # not held back by asr's wave
    assert log.index(("end", "stats")) < log.index(("start", "after"))


# ------------------------------------------------------------------ modules

def test_gateway_modules_import_no_cycle():
    """Every import between the gateway's modules (TYPE_CHECKING ones too) points one way."""
    import ast
    from pathlib import Path

    import speechops_worker.gateway as pkg
    root = Path(pkg.__file__).parent
    prefix = "speechops_worker.gateway."
    edges: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith(prefix):
                    deps.add(node.module[len(prefix):])
                elif node.module == prefix[:-1]:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name[len(prefix):] for a in node.names if a.name.startswith(prefix))
        edges[path.stem] = deps - {path.stem}
    assert {"server", "session", "native", "pipeline", "degrade", "admin"} <= set(edges)

    def visit(module, trail):
        assert module not in trail, " -> ".join(trail + [module])
        for dep in edges.get(module, ()):
            visit(dep, trail + [module])

    for module in edges:
        visit(module, [])
    assert "server" not in edges["session"] and "native" not in edges["session"]


# ------------------------------------------------------------------ admission by load

def L(now, streams, utilisation=None, final_p90=None, wait_p90=None, newest_final_from=None):
    return Load(now=now, streams=streams, utilisation=utilisation, final_p90=final_p90, wait_p90=wait_p90,
                newest_final_from=newest_final_from)


def test_admission_grows_in_steps_while_the_target_is_met_and_the_streams_fill_it():
    adm = Admission(target_s=1.0, hard_cap=64, utterance_models=True)
    assert adm.admits(3) and not adm.admits(4)             # a fresh replica: a few streams first
    # Full and within the target: one more stream per second (an eighth once it holds more).
    caps = [adm.update(L(t, 4, 0.3, 0.3, 0.01)) for t in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert caps == [5, 5, 5, 6, 6]                          # 4 streams no longer fill 6
    assert adm.update(L(3.0, 5, 0.3, 0.3, 0.01)) == 7
    assert adm.update(L(9.0, 0)) == 7                      # idle: the window holds


def test_busy_models_grow_the_window_only_on_a_final_measured_since_it_last_moved():
    # A stream's cost shows in its finals only once its utterance ends: growing each second
    # on finals measured before the last step outruns the feedback and overshoots.
    adm = Admission(target_s=1.0, hard_cap=64, utterance_models=True)
    assert adm.update(L(0.0, 4, 0.7, 0.3, 0.01)) == 4                          # busy, no final yet
    assert adm.update(L(1.0, 4, 0.7, 0.3, 0.01, newest_final_from=0.5)) == 5   # a final: one step
    for t in (2.0, 3.0, 4.0):                                                  # the same final again: hold
        assert adm.update(L(t, 5, 0.7, 0.3, 0.01, newest_final_from=0.5)) == 5
    assert adm.update(L(5.0, 5, 0.7, 0.3, 0.01, newest_final_from=1.5)) == 6   # one spoken after the step
    assert adm.update(L(6.0, 6, 0.3, 0.3, 0.01, newest_final_from=1.5)) == 7   # idle models: room shows at once


def test_admission_falls_at_once_when_the_replica_misses():
    adm = Admission(target_s=0.75, hard_cap=64, utterance_models=True, silence_s=0.25)
    adm.capacity = 30
    assert adm.update(L(0.0, 10, 0.5, 1.0, 0.05)) == 5                 # p90 twice the 0.5 s left: half
    assert "final p90" in adm.reason and not adm.admits(5)
    assert adm.update(L(0.5, 5, 0.5, 0.3, 0.05)) == 5                  # met again, but holds a second
    assert adm.update(L(1.5, 5, 0.5, 0.3, 0.05)) == 5                  # no final spoken since the miss
    assert adm.update(L(2.5, 5, 0.5, 0.3, 0.05, newest_final_from=1.0)) == 6
    adm.capacity = 30
    assert adm.update(L(3.0, 12, 0.95, 0.3, 0.05)) == 12               # models over the ceiling: no more
    adm.capacity = 30
    assert adm.update(L(5.0, 10, 0.5, 0.2, 0.3)) == 10                 # queue wait over half the budget
    vad_only = Admission(target_s=0.5, hard_cap=1000, utterance_models=False)
    assert vad_only.update(L(0.0, 600, None, None, 0.01)) == 1000      # VAD's cost per stream is not linear
    assert vad_only.update(L(0.0, 600, None, None, 0.5)) == 600


def test_admission_always_takes_one_stream_or_it_could_never_measure_again():
    adm = Admission(target_s=1.0, hard_cap=64, utterance_models=True)
    assert adm.update(L(0.0, 1, 0.99, 3.0, 0.9)) == 1     # one stream over everything: still one
    assert adm.update(L(5.0, 0, 0.0, None, 0.9)) == 1     # idle, a stale queue wait
    assert adm.admits(0) and not adm.admits(1)
