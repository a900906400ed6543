"""The models the worker image ships, and the tensor contract between gateway and Triton.

One place for tensor names, types and shapes: the gateway packs requests with them,
the Python-backend models read them, and the operator renders Triton model configs
from them (`speechops_contract.model_config`).

Packed path (docs/architecture.md, "Audio path"): the gateway gathers rows of many streams that
arrive within one pack window into a single request. Row i belongs to stream
STREAM_ID[i]; START/END mark the first and last row of a stream; a stream may have
several rows in one request, in time order. Models with per-stream state keep it by
stream id, free it on END, and sweep streams idle longer than `idle_timeout_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

SAMPLE_RATE = 16000
VAD_CHUNK = 512  # Silero VAD's window at 16 kHz (32 ms)


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str               # Triton dtype name: TYPE_FP32 -> "FP32"
    dims: tuple[int, ...]    # -1 = variable; without the batch dimension when batched


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    # "packed": the gateway packs rows itself (max_batch_size 0, no Triton batcher).
    # "sequence": Triton's sequence batcher with CORRID/START/END/READY controls.
    batching: str
    max_batch_size: int = 0
    stateful: bool = False
    description: str = ""
    # The model folder whose 1/model.py serves this model (default: its own), and the
    # config.pbtxt parameters that set it apart: a variant is configuration, not code.
    code: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)


_STREAM_ROWS = (
    Tensor("STREAM_ID", "UINT64", (-1,)),
    Tensor("START", "BOOL", (-1,)),
    Tensor("END", "BOOL", (-1,)),
)

MODELS: dict[str, ModelSpec] = {
    "silero_vad": ModelSpec(
        name="silero_vad",
        inputs=(Tensor("AUDIO", "FP32", (-1, VAD_CHUNK)),) + _STREAM_ROWS,
        outputs=(Tensor("PROB", "FP32", (-1,)),),
        batching="packed",
        stateful=True,
        description="Silero VAD speech probability per 32 ms chunk; RNN state kept per stream id",
    ),
    "silero_vad_seq": ModelSpec(
        name="silero_vad_seq",
        inputs=(Tensor("AUDIO", "FP32", (VAD_CHUNK,)),),
        outputs=(Tensor("PROB", "FP32", (1,)),),
        batching="sequence",
        max_batch_size=64,
        stateful=True,
        description="Silero VAD under Triton's sequence batcher (one request per chunk), for comparison",
    ),
    "whisper_asr": ModelSpec(
        name="whisper_asr",
        inputs=(
            Tensor("AUDIO", "FP32", (-1, -1)),      # rows zero-padded to the longest
            Tensor("LENGTH", "INT32", (-1,)),       # real samples per row
            Tensor("PROMPT", "BYTES", (-1,)),       # previous text / vocabulary, may be empty
        ),
        outputs=(Tensor("TEXT", "BYTES", (-1,)),),
        batching="packed",
        description="Whisper (CTranslate2, tiny.en by default) over each row's utterance so far, rows encoded together",
    ),
    "whisper_asr_greedy": ModelSpec(
        name="whisper_asr_greedy",
        inputs=(
            Tensor("AUDIO", "FP32", (-1, -1)),
            Tensor("LENGTH", "INT32", (-1,)),
            Tensor("PROMPT", "BYTES", (-1,)),
        ),
        outputs=(Tensor("TEXT", "BYTES", (-1,)),),
        batching="packed",
        description="Lighter fallback for whisper_asr, used under overload: a 10 s window, shorter output and prompt",
        code="whisper_asr",
        # A 10 s window instead of 15: nearly as accurate on the human clips, for less encoder
        # time (docs/benchmarks/asr-window-2026-12-03.md).
        parameters={"window_s": "10", "max_new_tokens": "96", "prompt_tokens": "48"},
    ),
    "audio_stats": ModelSpec(
        name="audio_stats",
        inputs=(Tensor("AUDIO", "FP32", (-1, -1)), Tensor("LENGTH", "INT32", (-1,))),
        outputs=(
            Tensor("RMS_DBFS", "FP32", (-1,)),
            Tensor("PEAK", "FP32", (-1,)),
            Tensor("CLIP_RATIO", "FP32", (-1,)),
        ),
        batching="packed",
        description="Audio level and clipping analytics; runs in parallel with ASR",
    ),
}

# Where a stage's Whisper model from a PVC or an image is mounted in the Triton container:
# WHISPER_MOUNT/<stage name> (the operator mounts it, the model's model_path names it).
WHISPER_MOUNT = "/whisper"


def runs_whisper(model: str) -> bool:
    """Whether `model` is served by the Whisper backend (whisper_asr and its variants)."""
    spec = MODELS.get(model)
    return spec is not None and (spec.code or spec.name) == "whisper_asr"
