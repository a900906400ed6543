"""Small helpers shared by the Triton Python-backend models (models/*/1/model.py).

Kept free of triton_python_backend_utils at import time so the pure model logic
(vad.py, asr.py, audio_stats.py) stays testable without Triton.
"""

from __future__ import annotations

import numpy as np


def parameters(model_config: dict) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    return {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}


def as_numpy(request, name: str) -> np.ndarray:
    import triton_python_backend_utils as pb_utils
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise KeyError(f"input {name} is missing")
    return tensor.as_numpy()


def uses_gpu(args: dict) -> bool:
    return args.get("model_instance_kind") == "GPU"


def torch_device(args: dict, *, threads: int = 1) -> str:
    """Where a torch model of this instance runs: the instance's GPU when Triton placed it
    on one and torch can use it, else CPU with a bounded thread count (many models share
    the cores)."""
    import torch
    torch.set_num_threads(max(1, threads))
    if uses_gpu(args) and torch.cuda.is_available():
        return f"cuda:{int(args.get('model_instance_device_id', 0))}"
    return "cpu"


def decode_strings(array: np.ndarray) -> list[str]:
    """A BYTES tensor as Python strings (Triton hands them over as bytes objects)."""
    return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in np.asarray(array, dtype=object).reshape(-1)]


class StreamMetrics:
    """Per-model stream-state metrics on Triton's metrics endpoint, so a leak shows up."""

    def __init__(self, model_name: str):
        import triton_python_backend_utils as pb_utils
        from speechops_contract.names import M_MODEL_STREAMS, M_MODEL_SWEPT
        # Families must outlive their metrics (the stub checks), so keep both.
        self._families = (
            pb_utils.MetricFamily(name=M_MODEL_STREAMS, description="Streams whose state the model holds",
                                  kind=pb_utils.MetricFamily.GAUGE),
            pb_utils.MetricFamily(name=M_MODEL_SWEPT, description="Stream states freed for being idle",
                                  kind=pb_utils.MetricFamily.COUNTER),
        )
        labels = {"model": model_name}
        self._streams = self._families[0].Metric(labels=labels)
        self._swept = self._families[1].Metric(labels=labels)
        self._swept_seen = 0

    def update(self, active_streams: int, swept_total: int) -> None:
        self._streams.set(float(active_streams))
        if swept_total > self._swept_seen:
            self._swept.increment(float(swept_total - self._swept_seen))
            self._swept_seen = swept_total
