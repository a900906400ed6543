"""Triton Python backend: Silero VAD under Triton's sequence batcher (one request per
32 ms chunk per stream; CORRID/START/END/READY controls). Kept for the benchmark's
comparison with the packed path (silero_vad); the state handling is the same
speechops_worker.vad.BatchedVad, keyed by correlation id.
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

import numpy as np  # noqa: E402
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

    def execute(self, requests):
        # Every request is one chunk of one sequence; run all of them in one forward call.
        responses = [None] * len(requests)
        rows = []  # (request index, audio [b, 512], corrid [b], start [b], end [b], ready [b])
        for i, request in enumerate(requests):
            try:
                audio = backend.as_numpy(request, "AUDIO")
                controls = [backend.as_numpy(request, name).reshape(-1)
                            for name in ("CORRID", "START", "END", "READY")]
                if audio.ndim != 2 or any(c.shape != (audio.shape[0],) for c in controls):
                    raise VadInputError(f"AUDIO must be [batch, 512] with one control value per row, got {list(audio.shape)}")
                corrid, start, end, ready = controls
                rows.append((i, audio, corrid.astype(np.uint64), start > 0.5, end > 0.5, ready > 0.5))
            except (VadInputError, KeyError) as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"silero_vad_seq: {exc}"))
        if rows:
            ready = np.concatenate([r[5] for r in rows])
            audio = np.concatenate([r[1] for r in rows])
            probs = np.zeros(len(audio), dtype=np.float32)
            try:
                if ready.any():
                    probs[ready] = self.vad.process(
                        audio[ready], np.concatenate([r[2] for r in rows])[ready],
                        np.concatenate([r[3] for r in rows])[ready], np.concatenate([r[4] for r in rows])[ready])
                offset = 0
                for i, chunk, *_ in rows:
                    part = probs[offset:offset + len(chunk)].reshape(-1, 1)
                    offset += len(chunk)
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("PROB", part)])
            except VadInputError as exc:
                for i, *_ in rows:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"silero_vad_seq: {exc}"))
        stats = self.vad.stats()
        self.metrics.update(stats.active_streams, stats.swept)
        return responses

    def finalize(self):
        self.vad = None
        self.metrics = None
