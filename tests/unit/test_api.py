import pytest

from speechops_contract import api


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("14d", 14 * 86400), ("2w", 1209600), (45, 45.0),
])
def test_parse_duration_accepts_kubernetes_style_durations(text, seconds):
    assert api.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "s", "1h 30m", "-3s", -1, None])
def test_parse_duration_rejects_malformed_values(text):
    with pytest.raises(ValueError):
        api.parse_duration(text)


def test_empty_spec_gets_defaults_with_vad_then_asr():
    spec = api.parse_spec({})
    assert spec.profile == "interactive"
    assert [s.name for s in spec.stages] == ["vad", "asr"]
    assert spec.capacity.min_replicas <= spec.capacity.max_replicas
    assert api.stage_waves(spec.stages) == [["vad"], ["asr"]]


@pytest.mark.parametrize("raw, field", [
    ({"profile": "turbo"}, "spec.profile"),
    ({"capacity": {"minReplicas": 5, "maxReplicas": 2}}, "spec.capacity.minReplicas"),
    ({"capacity": {"targetUtilization": 1.5}}, "spec.capacity.targetUtilization"),
    ({"stages": [{"name": "a", "model": "m"}, {"name": "a", "model": "m"}]}, "spec.stages[1].name"),
    ({"stages": [{"name": "a", "model": "m", "dependsOn": ["zz"]}]}, "spec.stages[0].dependsOn[0]"),
    ({"stages": [{"name": "a", "model": "m", "dependsOn": ["b"]},
                 {"name": "b", "model": "m", "dependsOn": ["a"]}]}, "spec.stages"),
    ({"stages": [{"name": "a"}]}, "spec.stages[0].model"),
    ({"worker": {"resources": {"triton": {"limits": {"memory": "12XB"}}}}}, "spec.worker.resources.triton.limits.memory"),
    ({"scaling": {"leadTime": "soon"}}, "spec.scaling.leadTime"),
    ({"scaling": {"scaleDownMaxPercent": 0}}, "spec.scaling.scaleDownMaxPercent"),
    ({"scaling": {"scaleDownPeriod": "often"}}, "spec.scaling.scaleDownPeriod"),
    ({"scaling": {"dryRun": "yes"}}, "spec.scaling.dryRun"),
    ({"streams": {"contextWindow": "45s"}}, "spec.streams.contextWindow"),
])
def test_invalid_spec_names_the_field(raw, field):
    with pytest.raises(api.SpecError) as err:
        api.parse_spec(raw)
    assert field in [path for path, _ in err.value.problems]


def test_independent_stages_share_a_wave():
    spec = api.parse_spec({"stages": [
        {"name": "vad", "model": "silero_vad"},
        {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"]},
        {"name": "level", "model": "audio_stats", "dependsOn": ["vad"]},
    ]})
    assert api.stage_waves(spec.stages) == [["vad"], ["asr", "level"]]
