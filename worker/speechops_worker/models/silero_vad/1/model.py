"""Triton Python backend: Silero VAD on the packed path (many streams per request).

Thin wiring around speechops_worker.vad.BatchedVad; see catalog.py for the contract.
"""

import os
import site
import sys

# The backend stub's interpreter ignores PYTHONPATH: import the speechops code the
# launcher names (speechops_worker.triton.SOURCE_ROOTS_ENV), not whatever is installed.
for _dir in os.environ.get("SPEECHOPS_SITE_DIRS", "").split(os.pathsep):
    if _dir:
        site.addsitedir(_dir)
for _root in reversed(os.environ.get("SPEECHOPS_SOURCE_ROOTS", "").split(os.pathsep)):
    if _root and _root not in sys.path:
        sys.path.insert(0, _root)

import json  # noqa: E402

import triton_python_backend_utils as pb_utils  # noqa: E402

from speechops_worker import backend  # noqa: E402
from speechops_worker.vad import BatchedVad, VadInputError  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = backend.parameters(config)
        device = backend.torch_device(args, threads=int(params.get("threads", "1")))
        self.vad = BatchedVad(idle_timeout_s=float(params.get("idle_timeout_s", "30")), device=device)
        self.metrics = backend.StreamMetrics(args["model_name"])
        pb_utils.Logger.log_info(f"silero_vad ready on {device}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                probs = self.vad.process(
                    backend.as_numpy(request, "AUDIO"), backend.as_numpy(request, "STREAM_ID"),
                    backend.as_numpy(request, "START"), backend.as_numpy(request, "END"))
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("PROB", probs)]))
            except VadInputError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"silero_vad: {exc}")))
        stats = self.vad.stats()
        self.metrics.update(stats.active_streams, stats.swept)
        return responses

    def finalize(self):
        self.vad = None
        self.metrics = None
