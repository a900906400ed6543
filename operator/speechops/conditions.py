"""Status conditions after the Kubernetes API conventions.

Several writers share `status.conditions` (the reconciler owns Ready, Progressing and
Degraded; the scaler owns ScalingActive). A merge patch replaces the whole list, so each
writer starts from the object's current list and changes only its own types.
"""

from __future__ import annotations

import datetime
from typing import Any, Iterable, Mapping

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_ACTIVE = "ScalingActive"
# False while spec.streams.auth names no Secret of API keys: anyone who reaches the
# Service may stream. Allowed (the quickstart runs so), but said where users look.
STREAMS_AUTHENTICATED = "StreamsAuthenticated"
RECONCILER_TYPES = (READY, PROGRESSING, DEGRADED, STREAMS_AUTHENTICATED)
# The scaler's too: spec.capacity.streamsPerReplica against what the gateways measured.
CAPACITY_AS_MEASURED = "CapacityAsMeasured"
# ScalingActive=False because a HorizontalPodAutoscaler scales the workers: not a fallback.
CONFLICTING_AUTOSCALER = "ConflictingAutoscaler"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str, status: bool | str,
                  reason: str, message: str, generation: int | None, now: str | None = None) -> list[dict]:
    """A new list with `type_` set. lastTransitionTime changes only when status flips,
    so a condition that stays True keeps the time it became True."""
    status = ("True" if status else "False") if isinstance(status, bool) else status
    result = [dict(c) for c in conditions or []]
    old = next((c for c in result if c.get("type") == type_), None)
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": (old["lastTransitionTime"] if old and old.get("status") == status
                               and old.get("lastTransitionTime") else (now or now_rfc3339())),
    }
    if generation is None:
        del new["observedGeneration"]
    if old is None:
        result.append(new)
    else:
        result[result.index(old)] = new
    return result


def get_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def merge_types(current: Iterable[Mapping[str, Any]] | None, ours: Iterable[Mapping[str, Any]],
                types: Iterable[str]) -> list[dict]:
    """`current`, in its order, with the conditions of `types` taken from `ours`; other
    writers' conditions are kept as they are."""
    types = set(types)
    mine = {c["type"]: dict(c) for c in ours if c.get("type") in types}
    result = []
    for cond in current or []:
        result.append(mine.pop(cond.get("type"), None) or dict(cond))
    return result + list(mine.values())
