"""Triton model configs (config.pbtxt) per model.

The operator puts these in the pipeline's ConfigMap, `speechops up` writes them into a
local model repository, and the files checked in under worker/speechops_worker/models/
are this builder's output for the interactive profile (a test keeps them equal).
"""

from __future__ import annotations

from speechops_contract.catalog import MODELS, WHISPER_MOUNT, ModelSpec, Tensor, runs_whisper


# Model configs name a few types differently from the wire protocol (catalog.py uses the latter).
_CONFIG_TYPE = {"BYTES": "STRING"}


def _tensor(t: Tensor) -> str:
    dims = ", ".join(str(d) for d in t.dims)
    return f'  {{ name: "{t.name}" data_type: TYPE_{_CONFIG_TYPE.get(t.dtype, t.dtype)} dims: [ {dims} ] }}'


def render(model: str, *, instance_kind: str = "KIND_AUTO", instances: int = 1,
           idle_timeout_s: float = 30.0, parameters: dict[str, str] | None = None) -> str:
    """config.pbtxt text for one model.

    instance_kind: KIND_AUTO lets Triton pick GPU where there is one; the Python
    backend places the model, so nothing here assumes CPU. idle_timeout_s: the
    pipeline's spec.streams.idleTimeout; a stateful model frees a stream's state only
    after that long without a request, so it never sweeps a stream the gateway still
    holds open. No model uses Triton's dynamic batching: the gateway packs rows itself."""
    spec: ModelSpec = MODELS[model]
    lines = [
        f'name: "{spec.name}"',
        'backend: "python"',
        f"max_batch_size: {spec.max_batch_size}",
        "input [",
        ",\n".join(_tensor(t) for t in spec.inputs),
        "]",
        "output [",
        ",\n".join(_tensor(t) for t in spec.outputs),
        "]",
        f"instance_group [ {{ count: {instances} kind: {instance_kind} }} ]",
    ]
    if spec.batching == "sequence":
        idle_us = int(idle_timeout_s * 1_000_000)
        lines += [
            "sequence_batching {",
            f"  max_sequence_idle_microseconds: {idle_us}",
            "  direct { }",
            "  control_input [",
            '    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },',
            '    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] } ] },',
            '    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] },',
            '    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }',
            "  ]",
            "}",
        ]
    params = {"idle_timeout_s": f"{idle_timeout_s:g}", **spec.parameters, **(parameters or {})}
    for key in sorted(params):
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{params[key]}" }} }}')
    return "\n".join(lines) + "\n"


def whisper_model_dir(stage) -> str | None:
    """The directory in the Triton container holding `stage`'s Whisper model, or None
    for the packaged default (`stage` is an api.Stage)."""
    whisper = stage.whisper
    if whisper is None:
        return None
    if whisper.path:
        return whisper.path
    if whisper.pvc_claim_name or whisper.image:
        return f"{WHISPER_MOUNT}/{stage.name}"
    return None


def stage_parameters(stage, model: str) -> dict[str, str]:
    """config.pbtxt parameters that pipeline `stage` sets on `model`, its model or its
    fallback: the stage's options (its own model only) and its Whisper model, language
    and task (both, so the fallback decodes with the same weights)."""
    params = dict(stage.options) if model == stage.model else {}
    if stage.whisper is not None and runs_whisper(model):
        model_dir = whisper_model_dir(stage)
        if model_dir:
            params["model_path"] = model_dir
        if stage.whisper.language:
            params["language"] = stage.whisper.language
        params["task"] = stage.whisper.task
    return params


def pipeline_parameters(stages) -> dict[str, dict[str, str]]:
    """{model: parameters} for every model the stages run (see stage_parameters)."""
    out: dict[str, dict[str, str]] = {}
    for stage in stages:
        for model in (stage.model, stage.fallback_model):
            if model and model not in out:
                out[model] = stage_parameters(stage, model)
    return out
