"""A SpeechPipeline's stages as the gateway runs them (pure; checked at start-up).

The VAD stage segments the stream chunk by chunk; every other stage runs on each
utterance, wave by wave (`speechops_contract.api.stage_waves`): the stages of one wave run
concurrently, e.g. `asr` and `stats` both after `vad`. ASR stages also run on the
utterance-so-far every partial interval; analytics stages run once per utterance.
Without a VAD stage the whole stream is speech, cut into utterances by contextWindow.
"""

from __future__ import annotations

from dataclasses import dataclass

from speechops_contract.api import PipelineSpec, SpecError, stage_waves
from speechops_contract.catalog import MODELS

# How the gateway drives each model of the catalog.
MODEL_KINDS = {
    "silero_vad": "vad",
    "whisper_asr": "asr",
    "whisper_asr_greedy": "asr",
    "audio_stats": "analytics",
}


@dataclass(frozen=True)
class StagePlan:
    name: str
    model: str
    kind: str                   # "vad" | "asr" | "analytics"
    fallback_model: str | None
    optional: bool
    prompt: str                 # vocabulary prompt from the stage's options


@dataclass(frozen=True)
class PipelinePlan:
    name: str
    spec: PipelineSpec
    vad: StagePlan | None
    waves: tuple[tuple[StagePlan, ...], ...]   # utterance stages only

    @property
    def models(self) -> set[str]:
        stages = [s for wave in self.waves for s in wave] + ([self.vad] if self.vad else [])
        return {s.model for s in stages} | {s.fallback_model for s in stages if s.fallback_model}


def plan(name: str, spec: PipelineSpec) -> PipelinePlan:
    problems = []
    stages: dict[str, StagePlan] = {}
    for i, s in enumerate(spec.stages):
        for field, model in (("model", s.model), ("fallbackModel", s.fallback_model)):
            if model is not None and model not in MODEL_KINDS:
                known = ", ".join(sorted(MODEL_KINDS))
                hint = " (sequence-batcher model, benchmark only)" if model in MODELS else ""
                problems.append((f"spec.stages[{i}].{field}", f"the gateway cannot serve {model!r}{hint}; known: {known}"))
        kind = MODEL_KINDS.get(s.model, "")
        if s.fallback_model and MODEL_KINDS.get(s.fallback_model) != kind:
            problems.append((f"spec.stages[{i}].fallbackModel", f"{s.fallback_model!r} is not a {kind} model like {s.model!r}"))
        stages[s.name] = StagePlan(s.name, s.model, kind, s.fallback_model, s.optional, s.options.get("prompt", ""))
    vads = [s for s in stages.values() if s.kind == "vad"]
    if len(vads) > 1:
        problems.append(("spec.stages", f"at most one VAD stage, got {[s.name for s in vads]}"))
    if problems:
        raise SpecError(problems)
    vad = vads[0] if vads else None
    waves = tuple(tuple(stages[n] for n in wave if stages[n].kind != "vad") for wave in stage_waves(spec.stages))
    return PipelinePlan(name=name, spec=spec, vad=vad, waves=tuple(w for w in waves if w))
