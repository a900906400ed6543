"""Triton over gRPC: the blocking call the packer runs on its threads, and a health probe.

The sync tritonclient is used on a small thread pool: measured here it had better tail
latency than the aio client, and the packed models need no gRPC streaming
(state is kept by stream id in the model, not by Triton's sequence batcher).
"""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from speechops_worker.gateway.packer import InferenceUnavailable


class TritonInfer:
    """Callable: (model, inputs, output names) -> outputs. One gRPC client per thread."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _client(self) -> grpcclient.InferenceServerClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = grpcclient.InferenceServerClient(self.url)
        return client

    def __call__(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        request = []
        for name, array in inputs.items():
            dtype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = self._client().infer(model, request, outputs=wanted, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            self._reset()
            raise InferenceUnavailable(f"Triton model {model!r} failed: {exc.message() or exc}") from None
        return {name: result.as_numpy(name) for name in outputs}

    def ready(self) -> bool:
        try:
            return bool(self._client().is_server_ready(client_timeout=1.0))
        except InferenceServerException:
            self._reset()
            return False

    def _reset(self) -> None:
        """A fresh channel on the next call: a broken one waits out gRPC's reconnect
        backoff (up to minutes), a new one connects as soon as Triton is back."""
        client, self._local.client = getattr(self._local, "client", None), None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken channel may fail; it is dropped anyway
                pass
