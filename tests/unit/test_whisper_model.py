"""A pipeline picks its Whisper model: spec.stages[].whisper (a PVC, an image or a path;
language, task) parsed with clear errors, and wired into the worker pod (volumes, init
container, Triton mounts) and the model configs of the stage's model and fallback."""

from __future__ import annotations

import pytest

from speechops_contract import api, model_config
from speechops_contract.catalog import WHISPER_MOUNT
from speechops.resources.model_configmap import model_configs
from speechops.resources.worker import pod_spec


def stages(whisper=None, **asr):
    asr_stage = {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"],
                 "fallbackModel": "whisper_asr_greedy", **asr}
    if whisper is not None:
        asr_stage["whisper"] = whisper
    return {"stages": [{"name": "vad", "model": "silero_vad"}, asr_stage]}


def parameters(config: str) -> dict[str, str]:
    import re
    return dict(re.findall(r'parameters \{ key: "([^"]+)" value: \{ string_value: "([^"]*)" \} \}', config))


def test_without_whisper_the_packaged_model_runs():
    spec = api.parse_spec(stages())
    assert spec.stages[1].whisper is None
    configs = model_configs(spec)
    assert "model_path" not in parameters(configs["whisper_asr.pbtxt"])
    names = {v["name"] for v in pod_spec("p", spec)["volumes"]}
    assert not any(n.startswith("whisper-") for n in names)


def test_a_pvc_model_is_mounted_read_only_and_named_in_both_configs():
    spec = api.parse_spec(stages({"pvc": {"claimName": "whisper-models", "subPath": "large-v3"},
                                  "language": "de", "task": "translate"}))
    pod = pod_spec("p", spec)
    assert {"name": "whisper-asr", "persistentVolumeClaim": {"claimName": "whisper-models", "readOnly": True}} \
        in pod["volumes"]
    triton = next(c for c in pod["initContainers"] if c["name"] == "triton")
    assert {"name": "whisper-asr", "mountPath": f"{WHISPER_MOUNT}/asr", "readOnly": True, "subPath": "large-v3"} \
        in triton["volumeMounts"]
    configs = model_configs(spec)
    for model in ("whisper_asr", "whisper_asr_greedy"):   # the fallback decodes with the same weights
        params = parameters(configs[f"{model}.pbtxt"])
        assert (params["model_path"], params["language"], params["task"]) == (f"{WHISPER_MOUNT}/asr", "de", "translate")
    assert parameters(configs["whisper_asr_greedy.pbtxt"])["window_s"] == "10"   # its own options stay


def test_an_image_model_is_copied_by_an_init_container_before_triton_starts():
    spec = api.parse_spec(stages({"image": {"image": "registry.example/whisper-base:1", "path": "/weights/"}}))
    pod = pod_spec("p", spec)
    names = [c["name"] for c in pod["initContainers"]]
    assert names.index("copy-whisper-asr") < names.index("triton")
    copy = pod["initContainers"][names.index("copy-whisper-asr")]
    assert copy["image"] == "registry.example/whisper-base:1"
    assert copy["command"] == ["cp", "-R", "/weights/.", f"{WHISPER_MOUNT}/asr/"]
    assert {"name": "whisper-asr", "emptyDir": {}} in pod["volumes"]
    assert parameters(model_configs(spec)["whisper_asr.pbtxt"])["model_path"] == f"{WHISPER_MOUNT}/asr"


def test_a_path_in_the_image_needs_no_volume():
    spec = api.parse_spec(stages({"path": "/opt/whisper/small.en"}))
    assert parameters(model_configs(spec)["whisper_asr.pbtxt"])["model_path"] == "/opt/whisper/small.en"
    assert not any(v["name"].startswith("whisper-") for v in pod_spec("p", spec)["volumes"])


@pytest.mark.parametrize("raw, field, message", [
    (stages({"pvc": {"claimName": "a"}, "image": {"image": "b"}}), "spec.stages[1].whisper", "one of pvc, image or path"),
    (stages({"pvc": {}}), "spec.stages[1].whisper.pvc.claimName", "required"),
    (stages({"image": {"path": "/m"}}), "spec.stages[1].whisper.image.image", "required"),
    (stages({"path": "models/base"}), "spec.stages[1].whisper.path", "absolute"),
    (stages({"language": "German"}), "spec.stages[1].whisper.language", "Whisper language code"),
    (stages({"task": "summarize"}), "spec.stages[1].whisper.task", "one of transcribe, translate"),
    (stages(options={"model_path": "/x"}), "spec.stages[1].options.model_path", "whisper"),
    ({"stages": [{"name": "vad", "model": "silero_vad", "whisper": {"path": "/m"}}]},
     "spec.stages[0].whisper", "only for Whisper stages"),
    ({"stages": [{"name": "a", "model": "whisper_asr", "whisper": {"path": "/m1"}},
                 {"name": "b", "model": "whisper_asr", "whisper": {"path": "/m2"}}]},
     "spec.stages[1].whisper", "one model name serves one Whisper model"),
])
def test_bad_whisper_settings_name_the_field(raw, field, message):
    with pytest.raises(api.SpecError) as err:
        api.parse_spec(raw)
    assert any(f == field and message in m for f, m in err.value.problems), err.value.problems


def test_stage_parameters_leave_other_models_alone():
    spec = api.parse_spec(stages({"path": "/m", "language": "fr"}, options={"window_s": "30"}))
    params = model_config.pipeline_parameters(spec.stages)
    assert params["silero_vad"] == {}
    assert params["whisper_asr"] == {"window_s": "30", "model_path": "/m", "language": "fr", "task": "transcribe"}
    assert params["whisper_asr_greedy"] == {"model_path": "/m", "language": "fr", "task": "transcribe"}
