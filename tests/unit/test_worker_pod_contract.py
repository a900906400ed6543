"""The operator describes a pipeline to the gateway container through its environment;
the gateway's entry point must read back the same pipeline."""

from tests.crd_schema import load_pipeline

from speechops_contract import api, names
from speechops.resources.worker import gateway_container
from speechops_worker.gateway.__main__ import pipeline_from_environment
from speechops_worker.local import UpError, pipeline_from_doc

import pytest


def test_gateway_reads_back_the_pipeline_the_operator_puts_in_its_environment(repo_root):
    doc = load_pipeline(repo_root / "examples" / "voice-assistant-interactive.yaml")
    spec = api.parse_spec(doc["spec"])
    env = {e["name"]: e["value"] for e in gateway_container("assistant", spec)["env"] if "value" in e}
    name, read_back = pipeline_from_doc(pipeline_from_environment(env))
    assert name == "assistant"
    assert read_back.stages == spec.stages
    assert read_back.streams == spec.streams and read_back.profile == spec.profile
    assert env[names.ENV_TRITON_GRPC_URL].endswith(f":{names.TRITON_GRPC_PORT}")


def test_gateway_without_pipeline_or_environment_says_what_it_needs():
    with pytest.raises(UpError, match="PIPELINE_SPEC"):
        pipeline_from_environment({})
