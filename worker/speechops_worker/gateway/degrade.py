"""Degradation: when the gateway steps streams down, and what each level means.

The gateway-wide level is decided from how long utterance requests (ASR, analytics)
waited in the gateway for Triton (`decide_level`, pure; `Degrader` keeps its state). A
stream applies a level through the functions below, so "level 1" and "level 2" are
defined in one place:

- level 1: partials half as often, optional stages skipped;
- level 2: no partials, fallback models.
"""

from __future__ import annotations

from speechops_worker.gateway.pipeline import PipelinePlan, StagePlan

MAX_LEVEL = 2


def decide_level(level: int, wait: float | None, calm_since: float | None, last_step: float, now: float,
                 params) -> tuple[int, float | None, float]:
    """Degradation level from the longest recent queue wait of a stage (pure).

    `params` has degrade_after_s (a wait above it steps down), restore_below_s (below it
    for restore_hold_s steps up) and step_hold_s (at most one step down per this), as
    GatewayConfig does. Returns (level, calm_since, last_step). One
    step at a time, down fast (every step_hold_s while overloaded), up slowly (after
    restore_hold_s of calm)."""
    if wait is not None and wait > params.degrade_after_s:
        if level < MAX_LEVEL and now - last_step >= params.step_hold_s:
            return level + 1, None, now
        return level, None, last_step
    if wait is None or wait < params.restore_below_s:
        calm_since = now if calm_since is None else calm_since
        if level > 0 and now - calm_since >= params.restore_hold_s and now - last_step >= params.restore_hold_s:
            return level - 1, now, now
        return level, calm_since, last_step
    return level, None, last_step


class Degrader:
    """The gateway's level over time: feed it the recent queue wait, read `level`."""

    def __init__(self, params) -> None:
        self.params = params
        self.level = 0
        self._calm_since: float | None = None
        self._last_step = 0.0

    def tick(self, wait: float | None, now: float) -> bool:
        """True when the level changed."""
        level, self._calm_since, self._last_step = decide_level(
            self.level, wait, self._calm_since, self._last_step, now, self.params)
        changed, self.level = level != self.level, level
        return changed


# ---------------------------------------------------------------- what a level means for a stream

def partial_factor(level: int) -> float:
    return 2.0 if level >= 1 else 1.0


def partials_allowed(level: int) -> bool:
    return level < 2


def model_for(stage: StagePlan, level: int) -> str:
    return stage.fallback_model if level >= 2 and stage.fallback_model else stage.model


def runs(stage: StagePlan, level: int) -> bool:
    return not (stage.optional and level >= 1)


def notice(plan: PipelinePlan, level: int, partial_interval_s: float) -> tuple[str, dict]:
    """The event telling a stream its new level: ("degraded" | "restored", fields)."""
    if level == 0:
        return "restored", {"level": 0, "partial_interval_s": partial_interval_s}
    changes = [f"partials every {partial_interval_s:g}s" if partials_allowed(level) else "no partials"]
    stages = [s for w in plan.waves for s in w]
    skipped = [s.name for s in stages if not runs(s, level)]
    if skipped:
        changes.append(f"optional stages skipped: {', '.join(skipped)}")
    changes += [f"{s.name} uses {s.fallback_model}" for s in stages if model_for(s, level) != s.model]
    return "degraded", {"level": level, "reason": "gateway overloaded", "changes": changes}
