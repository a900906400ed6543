"""Desired vs live: when to write a child, and the merge patch that writes it.

A live object carries what the API server added (defaults, status, clusterIP,
resourceVersion), so "equal" means "every field we set has our value". That alone
misses a field we stopped setting (a nodeSelector removed from the spec), so each child
also carries the hash of the manifest we last wrote: a different hash means the spec
changed. Either difference -> one merge patch; neither -> no write.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping, Sequence

from kubernetes.utils.quantity import parse_quantity

from speechops_contract.api import GROUP

ANNOTATION_DESIRED_HASH = f"{GROUP}/desired-hash"

# Subtrees the operator owns entirely: keys found live but not desired are removed.
# Elsewhere extra keys stay (server defaults; labels and annotations others add).
OWNED_SUBTREES: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "template", "spec"),),
    "ConfigMap": (("data",),),
    "Service": (("spec", "selector"),),
    "PodDisruptionBudget": (("spec",),),
}

# Fields set only on create: the scaler owns a Deployment's replicas afterwards.
CREATE_ONLY: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "replicas"),),
}

_QUANTITY = re.compile(r"^[+-]?[0-9.]+([eE][+-]?[0-9]+|[numkMGTPE]i?|Ki)?$")


def without_create_only(manifest: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    for path in CREATE_ONLY.get(manifest.get("kind", ""), ()):
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return out


def desired_hash(manifest: Mapping[str, Any]) -> str:
    owned = without_create_only(manifest)
    meta = owned.get("metadata", {})
    meta.get("annotations", {}).pop(ANNOTATION_DESIRED_HASH, None)
    if meta.get("annotations") == {}:
        del meta["annotations"]   # hashing must not depend on whether the hash was set
    text = json.dumps(owned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def with_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    out["metadata"].setdefault("annotations", {})[ANNOTATION_DESIRED_HASH] = desired_hash(manifest)
    return out


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b                      # True == 1 in Python, not in Kubernetes
    if a == b:
        return True
    # The API server rewrites quantities canonically ("0.5" -> "500m", 1 -> "1").
    if isinstance(a, (str, int)) and isinstance(b, (str, int)) and not isinstance(a, bool) \
            and not isinstance(b, bool) and _QUANTITY.match(str(a)) and _QUANTITY.match(str(b)):
        try:
            return parse_quantity(a) == parse_quantity(b)
        except ValueError:
            return False
    return False


def _absent(value: Any) -> bool:
    """What the API server does not store: a ConfigMap's `data: {}` comes back without
    `data`, so an empty or null field matches a missing one (or it is patched forever)."""
    return value is None or value == {} or value == []


def is_subset(desired: Any, live: Any) -> bool:
    """Every field in `desired` has the same value in `live` (lists element by element)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            is_subset(v, live[k]) if k in live else _absent(v) for k, v in desired.items())
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        return (isinstance(live, Sequence) and not isinstance(live, str) and len(desired) == len(live)
                and all(is_subset(d, v) for d, v in zip(desired, live)))
    return _same_scalar(desired, live)


def needs_write(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """Why the live object must be patched ('spec changed', 'drifted'), or None."""
    wanted = with_hash(without_create_only(desired))
    live_hash = live.get("metadata", {}).get("annotations", {}).get(ANNOTATION_DESIRED_HASH)
    if live_hash != wanted["metadata"]["annotations"][ANNOTATION_DESIRED_HASH]:
        return "spec changed"
    if not is_subset(wanted, live):
        return "drifted"
    return None


def _merge_patch(live: Any, desired: Mapping[str, Any], path: tuple[str, ...],
                 owned: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    live = live if isinstance(live, Mapping) else {}
    for key, value in desired.items():
        if isinstance(value, Mapping) and isinstance(live.get(key), Mapping):
            sub = _merge_patch(live[key], value, path + (key,), owned)
            if sub:
                patch[key] = sub
        elif key not in live and _absent(value):
            continue
        elif key not in live or not is_subset(value, live[key]) or (
                isinstance(value, Mapping) != isinstance(live[key], Mapping)):
            patch[key] = value
    if any(path[:len(p)] == p for p in owned):
        for key in live:
            if key not in desired:
                patch[key] = None
    return patch


def merge_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that makes `live` match `desired` on the fields
    we own. Lists are replaced whole; create-only fields are left alone."""
    wanted = with_hash(without_create_only(desired))
    owned = OWNED_SUBTREES.get(desired.get("kind", ""), ())
    return _merge_patch(live, wanted, (), owned)
