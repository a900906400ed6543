"""The chart's `workers.gpu: false` switch (env SPEECHOPS_WORKER_GPUS) makes every
worker and placeholder pod CPU-only, whatever the pipeline asks."""

from __future__ import annotations

import pytest

from speechops_contract import api
from speechops.cluster_defaults import ENV_WORKER_GPUS, apply_cluster_defaults, workers_get_gpus
from speechops.resources.desired import desired_state
from speechops.resources.worker import GPU_RESOURCE
from tests.crd_schema import REPO, load_pipeline

GPU_EXAMPLE = load_pipeline(REPO / "examples" / "voice-assistant-interactive.yaml")


def _gpu_requests(spec: api.PipelineSpec) -> list[str]:
    state = desired_state("assistant", "speech", spec)
    found = []
    for child in state.children:
        if child["kind"] != "Deployment":
            continue
        pod = child["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            for section in ("requests", "limits"):
                if GPU_RESOURCE in c.get("resources", {}).get(section, {}):
                    found.append(f"{child['metadata']['name']}/{c['name']}")
        found += [f"{child['metadata']['name']}/toleration" for t in pod.get("tolerations", [])
                  if t.get("key") == GPU_RESOURCE]
    return found


@pytest.mark.parametrize("value, gpus", [("false", False), ("0", False), ("False", False), ("true", True),
                                         ("", True), (None, True)], ids=str)
def test_env_values(value, gpus):
    env = {} if value is None else {ENV_WORKER_GPUS: value}
    assert workers_get_gpus(env) is gpus


def test_unknown_value_is_a_clear_error():
    with pytest.raises(ValueError, match="SPEECHOPS_WORKER_GPUS must be true or false, got 'maybe'"):
        workers_get_gpus({ENV_WORKER_GPUS: "maybe"})


def test_cpu_only_cluster_builds_no_gpu_requests_for_a_gpu_pipeline():
    spec = api.parse_spec(GPU_EXAMPLE["spec"])
    assert _gpu_requests(spec), "the example asks for GPUs to begin with"
    cpu = apply_cluster_defaults(spec, {ENV_WORKER_GPUS: "false"})
    assert _gpu_requests(cpu) == []
    assert cpu.worker.gpus_per_pod == 0 and cpu.capacity == spec.capacity


def test_gpu_cluster_keeps_the_spec_unchanged():
    spec = api.parse_spec(GPU_EXAMPLE["spec"])
    assert apply_cluster_defaults(spec, {ENV_WORKER_GPUS: "true"}) is spec
