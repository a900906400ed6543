"""Triton Python backend: Whisper (CTranslate2; tiny.en unless `model_path` names another)
over packed rows of many streams (speechops_worker.asr encodes rows of equal padded
length together and decodes each row on its own). One instance serves all streams;
a stream's only state is what the gateway sends: its utterance so far and a prompt.
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
from speechops_worker.asr import AsrInputError, DecodeOptions, WhisperAsr  # noqa: E402

# DecodeOptions' defaults (greedy, a 15 s window); variants served by this file
# (whisper_asr_greedy) and pipelines override them through config.pbtxt parameters.
OPTIONS = DecodeOptions()


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        params = backend.parameters(json.loads(args["model_config"]))
        device = WhisperAsr.pick_device(backend.uses_gpu(args))
        threads = int(params["threads"]) if params.get("threads") else None
        self.asr = WhisperAsr(params.get("model_path") or None, device=device,
                              device_index=int(args.get("model_instance_device_id", 0)),
                              threads=threads, options=OPTIONS.with_parameters(params))
        kind = "multilingual" if self.asr.multilingual else "English-only"
        pb_utils.Logger.log_info(f"{self.name} ready on {device} ({self.asr.compute_type}): {kind} Whisper, "
                                 f"{self.asr.n_mels} mel bins, from {self.asr.path}; {self.asr.options}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                prompts = backend.decode_strings(backend.as_numpy(request, "PROMPT"))
                results = self.asr.transcribe(backend.as_numpy(request, "AUDIO"),
                                              backend.as_numpy(request, "LENGTH"), prompts)
                text = np.array([r.text.encode("utf-8") for r in results], dtype=object)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TEXT", text)]))
            except AsrInputError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}")))
        return responses

    def finalize(self):
        self.asr = None
