"""Apply a SpeechPipeline's desired state and report it: children, status, decisions.

Plain async functions over a `KubeClient` and plain dicts; kopf only calls them
(handlers.py). Every decision comes back as a `Decision` that the caller turns into a
Kubernetes Event and one log line.

Ownership:
- namespaced children carry a controller owner reference to the pipeline;
- PriorityClasses are cluster-scoped and shared: created if missing, never changed,
  deleted only when no pipeline uses them any more;
- the worker and reserve Deployments' `.spec.replicas` is set on create only; the
  scaler owns it afterwards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping

from speechops_contract import api, names
from speechops import conditions
from speechops.cluster_defaults import apply_cluster_defaults
from speechops.drift import merge_patch, needs_write, with_hash
from speechops.kube import ApiError, Conflict, KubeClient
from speechops.resources.desired import DesiredState, desired_state
from speechops.resources.priority import all_classes, classes_for

logger = logging.getLogger("speechops.reconcile")

# Children the operator may create for a pipeline: (kind, name function).
CHILD_KINDS: tuple[tuple[str, Any], ...] = (
    ("ConfigMap", names.model_configmap),
    ("Deployment", names.worker_deployment),
    ("Service", names.service),
    ("PodDisruptionBudget", names.disruption_budget),
    ("Deployment", names.reserve_deployment),
)


@dataclass(frozen=True)
class Decision:
    reason: str          # CamelCase, the Event's reason
    message: str
    warning: bool = False
    numbers: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    decisions: list[Decision] = field(default_factory=list)
    status_patch: dict[str, Any] = field(default_factory=dict)
    writes: int = 0            # API writes to children (creates, patches, deletes)
    valid: bool = True


def pipeline_key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def adopt(manifest: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    if body.get("metadata", {}).get("uid"):
        out["metadata"]["ownerReferences"] = [owner_reference(body)]
    return with_hash(out)


def describe(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']} {manifest['metadata']['name']}"


def invalid_message(err: api.SpecError) -> str:
    return "; ".join(f"{path}: {msg}" for path, msg in err.problems)


# ---------------------------------------------------------------- status (pure)

def worker_conditions(current: list[dict] | None, worker: Mapping[str, Any] | None,
                      generation: int | None) -> list[dict]:
    """Ready, Progressing and Degraded from the worker Deployment as it is now."""
    spec = (worker or {}).get("spec", {})
    status = (worker or {}).get("status", {})
    want = int(spec.get("replicas", 0) or 0)
    have = int(status.get("replicas", 0) or 0)
    ready = int(status.get("readyReplicas", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    meta_gen = (worker or {}).get("metadata", {}).get("generation")
    seen = status.get("observedGeneration")
    conds = list(current or [])

    def put(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = conditions.set_condition(conds, type_, ok, reason, message, generation)

    if worker is None:
        put(conditions.READY, False, "WorkersMissing", "the worker Deployment does not exist yet")
        put(conditions.PROGRESSING, True, "Creating", "creating the worker Deployment")
        put(conditions.DEGRADED, False, "WorkersMissing", "no workers yet")
        return conds
    rolling = (meta_gen is not None and seen is not None and seen < meta_gen) or updated < want or have > want
    if rolling:
        put(conditions.PROGRESSING, True, "RollingOut", f"{updated}/{want} worker pods updated, {have} exist")
    else:
        put(conditions.PROGRESSING, False, "Stable", f"{want} worker pods at the current revision")
    if want == 0:
        put(conditions.READY, True, "ScaledToZero", "no workers wanted; streams wait for a scale-up")
        put(conditions.DEGRADED, False, "ScaledToZero", "no workers wanted")
    elif ready == 0:
        put(conditions.READY, False, "NoWorkersReady", f"0/{want} worker pods ready")
        put(conditions.DEGRADED, False, "NoWorkersReady", f"0/{want} worker pods ready")
    elif ready < want:
        put(conditions.READY, True, "PartiallyReady", f"{ready}/{want} worker pods ready")
        put(conditions.DEGRADED, True, "WorkersNotReady", f"{want - ready} of {want} worker pods not ready")
    else:
        put(conditions.READY, True, "WorkersReady", f"{ready}/{want} worker pods ready")
        put(conditions.DEGRADED, False, "WorkersReady", "all worker pods ready")
    return conds


def auth_condition(current: list[dict] | None, spec: api.PipelineSpec, generation: int | None) -> list[dict]:
    """StreamsAuthenticated: whether streams need an API key (spec.streams.auth)."""
    if spec.streams.auth_secret:
        return conditions.set_condition(current, conditions.STREAMS_AUTHENTICATED, True, "ApiKeys",
                                        f"streams need a key from Secret {spec.streams.auth_secret}", generation)
    return conditions.set_condition(
        current, conditions.STREAMS_AUTHENTICATED, False, "NoApiKeys",
        "streams need no key: anyone who reaches the Service may stream; name a Secret of API keys in "
        "spec.streams.auth.secretName (docs/protocols.md)", generation)


def newly_unauthenticated(before: list[dict] | None, after: list[dict]) -> bool:
    """StreamsAuthenticated became False (or was first set False): one Warning, not one per resync."""
    old = conditions.get_condition(before, conditions.STREAMS_AUTHENTICATED)
    new = conditions.get_condition(after, conditions.STREAMS_AUTHENTICATED)
    return new is not None and new["status"] == "False" and (old is None or old.get("status") != "False")


def invalid_conditions(current: list[dict] | None, message: str, generation: int | None) -> list[dict]:
    conds = conditions.set_condition(current, conditions.READY, False, "InvalidSpec", message, generation)
    return conditions.set_condition(conds, conditions.PROGRESSING, False, "InvalidSpec",
                                    "fix the spec; existing workers are kept as they are", generation)


def failure_message(exc: Exception) -> str:
    """An API error as a user reads it: the request, the status and the server's own words."""
    text = str(exc)
    if isinstance(exc, ApiError):
        try:
            reason = json.loads(exc.body).get("message")
        except (ValueError, AttributeError):
            reason = None
        if reason:
            text = f"{exc.method} {exc.path}: HTTP {exc.status}: {reason}"
    return f"reconcile failed, retrying: {text or type(exc).__name__}"[:1000]


def failed_status(body: Mapping[str, Any], message: str) -> dict[str, Any]:
    """The status patch that records a failed reconcile (empty when it already says so)."""
    current = body.get("status") or {}
    conds = conditions.set_condition(current.get("conditions"), conditions.READY, False, "ReconcileFailed", message,
                                     body.get("metadata", {}).get("generation"))
    return status_patch(current, {"conditions": conds})


def status_patch(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """Only the status keys that differ: an unchanged status costs no write."""
    current = current or {}
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def worker_status(body: Mapping[str, Any], worker: Mapping[str, Any] | None) -> dict[str, Any]:
    generation = body.get("metadata", {}).get("generation")
    current = body.get("status") or {}
    status = (worker or {}).get("status", {})
    return {
        "conditions": worker_conditions(current.get("conditions"), worker, generation),
        "replicas": int(status.get("replicas", 0) or 0),
        "readyReplicas": int(status.get("readyReplicas", 0) or 0),
        "observedGeneration": generation,
    }


# ---------------------------------------------------------------- apply

async def ensure_priority_class(kube: KubeClient, manifest: Mapping[str, Any], out: Outcome,
                                known: Collection[str] | None) -> None:
    """`known`: PriorityClasses the caller knows exist (the operator watches them), or
    None to ask the API server."""
    name = manifest["metadata"]["name"]
    exists = name in known if known is not None else await kube.get("PriorityClass", None, name) is not None
    if exists:
        return   # shared and immutable in value: never rewritten
    try:
        await kube.create(manifest)
        out.writes += 1
        out.decisions.append(Decision("PriorityClassCreated", f"created shared PriorityClass {name}",
                                      numbers={"value": manifest["value"]}))
    except Conflict:
        pass     # another pipeline's reconcile created it first


async def apply_child(kube: KubeClient, desired: Mapping[str, Any], out: Outcome, restoring: bool) -> dict | None:
    """Create the child, or patch the fields we own when they differ. Returns it live."""
    kind, meta = desired["kind"], desired["metadata"]
    live = await kube.get(kind, meta["namespace"], meta["name"])
    if live is None:
        try:
            live = await kube.create(desired)
            out.writes += 1
            out.decisions.append(Decision("Restored" if restoring else "Created",
                                          f"{'restored missing' if restoring else 'created'} {describe(desired)}"))
            return live
        except Conflict:
            # Created meanwhile (a second handler run, another replica): compare instead.
            live = await kube.get(kind, meta["namespace"], meta["name"])
            if live is None:
                raise
    why = needs_write(desired, live)
    if why is None:
        return live
    live = await kube.patch(kind, meta["namespace"], meta["name"], merge_patch(desired, live))
    out.writes += 1
    reason = "Updated" if why == "spec changed" else "Repaired"
    out.decisions.append(Decision(reason, f"{'updated' if reason == 'Updated' else 'restored edited'} "
                                          f"{describe(desired)} ({why})"))
    return live


async def remove_unwanted(kube: KubeClient, body: Mapping[str, Any], state: DesiredState, out: Outcome) -> None:
    """Children this pipeline no longer needs (the reserve when reserve.mode is none)."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    wanted = {(c["kind"], c["metadata"]["name"]) for c in state.children}
    for kind, name_of in CHILD_KINDS:
        child = name_of(name)
        if (kind, child) in wanted:
            continue
        live = await kube.get(kind, namespace, child)
        if live is not None and _owned_by(live, body):
            await kube.delete(kind, namespace, child)
            out.writes += 1
            out.decisions.append(Decision("Deleted", f"deleted {kind} {child}: no longer part of the spec"))


def _owned_by(live: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    labels = live.get("metadata", {}).get("labels", {})
    return (labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
            and labels.get(names.LABEL_PIPELINE) == body["metadata"]["name"])


async def reconcile(kube: KubeClient, body: Mapping[str, Any],
                    known_classes: Collection[str] | None = None, admin_key: str | None = None) -> Outcome:
    """Bring one pipeline's children to its spec and compute its status patch. `admin_key`:
    the operator's public key (PEM), published to the gateways in the pipeline's ConfigMap."""
    out = Outcome()
    meta = body["metadata"]
    generation = meta.get("generation")
    current = body.get("status") or {}
    try:
        # Cluster settings from the chart (workers.gpu) win over the pipeline's spec.
        spec = apply_cluster_defaults(api.parse_spec(body.get("spec")))
    except api.SpecError as err:
        message = invalid_message(err)
        out.valid = False
        out.status_patch = status_patch(current, {
            "conditions": invalid_conditions(current.get("conditions"), message, generation),
            "observedGeneration": generation,
        })
        if out.status_patch:   # once per change, not on every resync
            out.decisions.append(Decision("InvalidSpec", message, warning=True,
                                          numbers={"problems": len(err.problems)}))
        return out

    state = desired_state(meta["name"], meta["namespace"], spec, admin_key)
    for pc in state.priority_classes:
        await ensure_priority_class(kube, pc, out, known_classes)
    # A child missing although this spec was already reconciled was deleted by someone;
    # after a spec change it may simply be newly wanted (the reserve turned on).
    restoring = generation is not None and current.get("observedGeneration") == generation
    live_worker = None
    for child in state.children:
        live = await apply_child(kube, adopt(child, body), out, restoring)
        if child["metadata"]["name"] == names.worker_deployment(meta["name"]) and child["kind"] == "Deployment":
            live_worker = live
    await remove_unwanted(kube, body, state, out)
    wanted = worker_status(body, live_worker)
    wanted["conditions"] = auth_condition(wanted["conditions"], spec, generation)
    if newly_unauthenticated(current.get("conditions"), wanted["conditions"]):
        # `body` may predate the last reconcile's status write (a child's event carries the
        # pipeline as last indexed): ask the API server before warning again.
        live = await kube.get(api.KIND, meta["namespace"], meta["name"])
        if live is not None and newly_unauthenticated((live.get("status") or {}).get("conditions"),
                                                      wanted["conditions"]):
            out.decisions.append(Decision("NoApiKeys", conditions.get_condition(
                wanted["conditions"], conditions.STREAMS_AUTHENTICATED)["message"], warning=True))
    out.status_patch = status_patch(current, wanted)
    return out


async def write_status(kube: KubeClient, body: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    """Writes the status keys that differ. A merge patch replaces the whole conditions
    list, and `body` may be older than the scaler's last write: our condition types are
    laid over the pipeline's conditions as they are now, so the scaler's are kept."""
    if not patch:
        return
    meta = body["metadata"]
    patch = dict(patch)
    if "conditions" in patch:
        live = await kube.get(api.KIND, meta["namespace"], meta["name"])
        if live is None:
            return   # deleted meanwhile
        current = live.get("status") or {}
        patch["conditions"] = conditions.merge_types(current.get("conditions"), patch["conditions"],
                                                     conditions.RECONCILER_TYPES)
        patch = status_patch(current, patch)
    if patch:
        await kube.patch(api.KIND, meta["namespace"], meta["name"], {"status": patch}, subresource="status")


# ---------------------------------------------------------------- deletion

async def delete_children(kube: KubeClient, body: Mapping[str, Any],
                          classes_still_used: Iterable[str]) -> list[Decision]:
    """Deletes the pipeline's children (the garbage collector would, but not before the
    owner is gone and not on every API server), then the shared PriorityClasses no other
    pipeline uses."""
    decisions: list[Decision] = []
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    for kind, name_of in CHILD_KINDS:
        live = await kube.get(kind, namespace, name_of(name))
        if live is not None and _owned_by(live, body) and await kube.delete(kind, namespace, name_of(name)):
            decisions.append(Decision("Deleted", f"deleted {kind} {name_of(name)}"))
    in_use = set(classes_still_used)
    for pc in all_classes():
        pc_name = pc["metadata"]["name"]
        if pc_name in in_use:
            continue
        live = await kube.get("PriorityClass", None, pc_name)
        labels = (live or {}).get("metadata", {}).get("labels", {})
        if live is not None and labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY:
            await kube.delete("PriorityClass", None, pc_name)
            decisions.append(Decision("PriorityClassDeleted", f"deleted PriorityClass {pc_name}: no pipeline uses it"))
    return decisions


def classes_used_by(spec_raw: Mapping[str, Any] | None) -> set[str]:
    """The PriorityClass names a pipeline's pods use (nothing for an invalid spec)."""
    try:
        spec = api.parse_spec(spec_raw)
    except api.SpecError:
        return set()
    return {pc["metadata"]["name"] for pc in classes_for(spec)}
