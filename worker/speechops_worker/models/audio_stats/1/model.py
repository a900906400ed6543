"""Triton Python backend: audio level and clipping per row (speechops_worker.audio_stats);
an independent stage the gateway runs concurrently with ASR."""

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

import triton_python_backend_utils as pb_utils  # noqa: E402

from speechops_worker import backend  # noqa: E402
from speechops_worker.audio_stats import StatsInputError, level_stats  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                stats = level_stats(backend.as_numpy(request, "AUDIO"), backend.as_numpy(request, "LENGTH"))
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("RMS_DBFS", stats.rms_dbfs),
                    pb_utils.Tensor("PEAK", stats.peak),
                    pb_utils.Tensor("CLIP_RATIO", stats.clip_ratio),
                ]))
            except StatsInputError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"audio_stats: {exc}")))
        return responses
