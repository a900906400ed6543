"""Settings the platform team sets once for the whole cluster (Helm values that reach
the operator as environment variables) and that win over each pipeline's spec.

SPEECHOPS_WORKER_GPUS=false (chart value `workers.gpu: false`): a cluster without GPUs
(kind, CPU-only clusters). Every worker and placeholder pod is built with
gpusPerPod 0, so none asks for `nvidia.com/gpu` and none would stay Pending for a GPU
that will never come.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from speechops_contract.api import PipelineSpec

ENV_WORKER_GPUS = "SPEECHOPS_WORKER_GPUS"
_FALSE = {"false", "0", "no", "off"}
_TRUE = {"true", "1", "yes", "on", ""}


def workers_get_gpus(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(ENV_WORKER_GPUS, "").strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ValueError(f"{ENV_WORKER_GPUS} must be true or false, got {value!r}")


def apply_cluster_defaults(spec: PipelineSpec, env: Mapping[str, str] | None = None) -> PipelineSpec:
    """The spec the operator builds from: the pipeline's own, with cluster settings applied."""
    if not workers_get_gpus(env) and spec.worker.gpus_per_pod:
        spec = dataclasses.replace(spec, worker=dataclasses.replace(spec.worker, gpus_per_pod=0))
    return spec
