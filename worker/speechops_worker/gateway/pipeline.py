"""A SpeechPipeline's stages as the gateway runs them: the plan (pure; checked at
start-up) and the stage DAG over one utterance (`run_stages`).

The VAD stage segments the stream chunk by chunk; every other stage runs on each
utterance once VAD has cut it, so a dependency on the VAD stage is already met and
stages that declare none (e.g. the examples' `levels`) run beside `asr`, not after it.
Each utterance stage starts as soon as the stages it depends on have finished. ASR
stages also run on the utterance-so-far every partial interval; analytics stages run
once per utterance. Without a VAD stage the whole stream is speech, cut into utterances
by contextWindow.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Awaitable, Callable

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
    depends_on: tuple[str, ...] = ()   # utterance stages only (the VAD stage is always done)


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
        stages[s.name] = StagePlan(s.name, s.model, kind, s.fallback_model, s.optional, s.options.get("prompt", ""),
                                   tuple(s.depends_on))
    vads = [s for s in stages.values() if s.kind == "vad"]
    if len(vads) > 1:
        problems.append(("spec.stages", f"at most one VAD stage, got {[s.name for s in vads]}"))
    if problems:
        raise SpecError(problems)
    vad = vads[0] if vads else None
    vad_names = {v.name for v in vads}
    utterance_stages = tuple(replace(s, depends_on=tuple(d for d in s.depends_on if d not in vad_names))
                             for s in stages.values() if s.kind != "vad")
    by_name = {s.name: s for s in utterance_stages}
    spec_stages = tuple(replace(s, depends_on=by_name[s.name].depends_on)
                        for s in spec.stages if s.name in by_name)
    waves = tuple(tuple(by_name[n] for n in wave) for wave in stage_waves(spec_stages))
    return PipelinePlan(name=name, spec=spec, vad=vad, waves=waves)


StageResult = tuple[StagePlan, "dict | BaseException", float]   # (stage, outputs or error, seconds)


async def run_stages(stages: tuple[StagePlan, ...],
                     run: Callable[[StagePlan], Awaitable[dict]]) -> dict[str, StageResult]:
    """Runs one utterance's stages as a DAG: each starts once the stages it depends on
    finished (`stages` in dependency order, e.g. the waves flattened; a dependency not
    in `stages`, such as a skipped optional stage, counts as done). A stage whose
    dependency failed is not run and reports that failure. Results in `stages` order."""
    tasks: dict[str, asyncio.Task] = {}

    async def one(stage: StagePlan) -> StageResult:
        for dep in stage.depends_on:
            if dep in tasks:
                _, out, _ = await tasks[dep]
                if isinstance(out, BaseException):
                    return stage, out, 0.0
        started = time.perf_counter()
        try:
            out = await run(stage)
        except asyncio.CancelledError as exc:   # the request was dropped (stream closed)
            if asyncio.current_task().cancelling():
                raise
            out = exc
        except Exception as exc:  # reported with the stage's name by the caller
            out = exc
        return stage, out, time.perf_counter() - started

    for stage in stages:
        tasks[stage.name] = asyncio.ensure_future(one(stage))
    done = await asyncio.gather(*tasks.values())
    return {stage.name: result for stage, result in zip(stages, done)}
