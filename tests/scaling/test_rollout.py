"""The fleet during a rollout: the Deployment's .spec.replicas, planned over the current
revision's pods, so a rollout's surge never raises the replicas (the ratchet)."""

from __future__ import annotations

import pytest

from speechops_contract.api import parse_spec
from speechops.scaling import controller, rollout

UID = "uid-worker"


def deployment(replicas: int, revision: str) -> dict:
    return {"metadata": {"name": "notes-worker", "uid": UID,
                         "annotations": {rollout.REVISION: revision}},
            "spec": {"replicas": replicas}}


def replicaset(hash_: str, revision: str) -> dict:
    return {"metadata": {"name": f"notes-worker-{hash_}", "labels": {rollout.TEMPLATE_HASH: hash_},
                         "annotations": {rollout.REVISION: revision},
                         "ownerReferences": [{"uid": UID, "kind": "Deployment", "name": "notes-worker"}]}}


def pod(name: str, hash_: str, ready: bool) -> dict:
    return {"metadata": {"name": name, "labels": {rollout.TEMPLATE_HASH: hash_},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": "2026-01-01T00:01:00Z"}]}}


def test_current_pods_are_the_current_revisions():
    pods = [pod("old-1", "a", True), pod("old-2", "a", True), pod("new-1", "b", False)]
    sets = [replicaset("a", "1"), replicaset("b", "2")]
    assert rollout.mixed_revisions(pods)
    assert [p["metadata"]["name"] for p in rollout.current_pods(pods, deployment(2, "2"), sets)] == ["new-1"]
    # Not known yet (the ReplicaSet not seen): every pod, the size comes from .spec.replicas.
    assert len(rollout.current_pods(pods, deployment(2, "3"), sets)) == 3
    assert not rollout.mixed_revisions([pod("old-1", "a", True), pod("old-2", "a", True)])


@pytest.mark.parametrize("filtered", [True, False], ids=["current-revision", "every-pod"])
def test_replicas_hold_through_a_slow_rollout(filtered):
    # A rollout whose new pods never become ready (waiting for a GPU node), no Prometheus
    # and no gateway answering: NoData, which holds the replicas.
    spec = parse_spec({"capacity": {"streamsPerReplica": 10, "minReplicas": 1, "maxReplicas": 8},
                       "scaling": {"mode": "reactive"}})
    state = controller.ScalerState.for_spec(spec)
    sets = [replicaset("a", "1"), replicaset("b", "2")]
    replicas = 3
    old = [pod(f"old-{i}", "a", True) for i in range(3)]
    new: list[dict] = []
    for tick in range(40):
        # The Deployment controller: a surge pod of the new revision per tick, up to replicas.
        if len(new) < replicas:
            new.append(pod(f"new-{tick}", "b", False))
        pods = old + new
        # Even counted over every pod (as before the ReplicaSets are read), the size is the
        # Deployment's, not the pods'.
        fleet = rollout.current_pods(pods, deployment(replicas, "2"), sets) if filtered else pods
        result = controller.tick(state, spec, "speech", "notes", 1000.0 + 15 * tick, None, fleet, {},
                                 deployment_replicas=replicas)
        replicas = result.plan.replicas
        assert replicas == 3, (tick, result.decision)
        assert not result.announce, (tick, result.decision)
