"""The ConfigMap of Triton model configs for one pipeline: one `<model>.pbtxt` per
stage model (and fallback model) known to the catalog, rendered for the pipeline's
profile. The worker's init container copies them over each model's config.pbtxt.

A model the catalog does not know keeps the config.pbtxt its repository ships.

It also carries the operator's admin public key (not secret), which the gateways mount
to verify the operator's drain requests: a new key reaches running pods through the
kubelet's ConfigMap refresh, without rolling them (the pods' hash covers the model
configs only)."""

from __future__ import annotations

import hashlib
from typing import Any

from speechops_contract import names
from speechops_contract.api import PipelineSpec
from speechops_contract.catalog import MODELS
from speechops_contract import model_config
from speechops.resources.meta import object_meta

COMPONENT = "worker"


def config_key(model: str) -> str:
    return f"{model}.pbtxt"


def model_configs(spec: PipelineSpec) -> dict[str, str]:
    """{config_key(model): config.pbtxt text} for every catalog model the stages use."""
    data = {config_key(model): model_config.render(model, idle_timeout_s=spec.streams.idle_timeout,
                                                   parameters=params or None)
            for model, params in model_config.pipeline_parameters(spec.stages).items() if model in MODELS}
    return dict(sorted(data.items()))


def configs_hash(data: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key, text in sorted(data.items()):
        digest.update(key.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def model_configmap(pipeline: str, namespace: str | None, spec: PipelineSpec,
                    admin_key: str | None = None) -> dict[str, Any]:
    data = model_configs(spec)
    if admin_key:
        data[names.ADMIN_PUBLIC_KEY_ITEM] = admin_key
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(names.model_configmap(pipeline), namespace, pipeline, spec.profile, COMPONENT),
        "data": data,
    }
