"""The real operator (kopf + speechops.handlers) against KMock's Kubernetes emulator."""

from __future__ import annotations

import copy
import time

from speechops_contract import names
from speechops import conditions
from speechops.drift import ANNOTATION_DESIRED_HASH
from tests.kmock_cluster import wait_for

NS = "speech"
CHILDREN = [("ConfigMap", names.model_configmap), ("Deployment", names.worker_deployment),
            ("Service", names.service), ("PodDisruptionBudget", names.disruption_budget),
            ("Deployment", names.reserve_deployment)]


def pipeline_doc(name: str, **spec) -> dict:
    return {"apiVersion": "speechops.dev/v1alpha1", "kind": "SpeechPipeline",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def condition(cluster, name, type_):
    body = cluster.pipeline(NS, name) or {}
    return conditions.get_condition((body.get("status") or {}).get("conditions"), type_)


def all_children(cluster, name):
    return {(kind, name_of(name)): cluster.child(kind, NS, name_of(name)) for kind, name_of in CHILDREN}


def test_apply_creates_children_owned_by_the_pipeline_and_reports_ready(cluster, operator):
    created = cluster.apply(pipeline_doc("callcenter", profile="realtime", capacity={"minReplicas": 2}))
    children = wait_for(lambda: (c := all_children(cluster, "callcenter")) and all(c.values()) and c,
                        what="all children")
    for (kind, child_name), child in children.items():
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == \
            ("SpeechPipeline", "callcenter", created["metadata"]["uid"], True), child_name
        assert child["metadata"]["labels"][names.LABEL_PIPELINE] == "callcenter"
    worker = children[("Deployment", "callcenter-worker")]
    assert worker["spec"]["replicas"] == 2
    assert worker["spec"]["template"]["spec"]["priorityClassName"] == "speechops-realtime"
    for pc in ("speechops-realtime", "speechops-reserve"):
        assert cluster.child("PriorityClass", None, pc) is not None

    # Before the pods are ready the pipeline says so; after, it is Ready.
    wait_for(lambda: (c := condition(cluster, "callcenter", "Ready")) and c["reason"] == "NoWorkersReady")
    cluster.mark_ready(NS, "callcenter-worker")
    ready = wait_for(lambda: (c := condition(cluster, "callcenter", "Ready")) and c["status"] == "True" and c,
                     what="Ready=True")
    assert ready["reason"] == "WorkersReady" and ready["message"] == "2/2 worker pods ready"
    status = cluster.pipeline(NS, "callcenter")["status"]
    assert status["readyReplicas"] == 2 and status["observedGeneration"] == 1


def test_spec_update_patches_children_but_never_replicas(cluster, operator):
    cluster.apply(pipeline_doc("assistant", profile="interactive", capacity={"minReplicas": 1, "maxReplicas": 9}))
    wait_for(lambda: cluster.child("Deployment", NS, "assistant-worker"), what="worker")
    # The scaler owns replicas once the Deployment exists.
    cluster.edit_child("Deployment", NS, "assistant-worker", {"spec": {"replicas": 4}})
    cluster.patch_spec(NS, "assistant", {"profile": "realtime", "capacity": {"minReplicas": 3},
                                         "streams": {"drainTimeout": "10m", "idleTimeout": "2m"}})

    def updated():
        w = cluster.child("Deployment", NS, "assistant-worker")
        return w["spec"]["template"]["spec"]["priorityClassName"] == "speechops-realtime" and w

    worker = wait_for(updated, what="worker patched to realtime")
    assert worker["spec"]["replicas"] == 4
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 600
    cm = cluster.child("ConfigMap", NS, "assistant-models")
    # The models keep an idle stream's state as long as the pipeline's idle timeout.
    assert 'key: "idle_timeout_s" value: { string_value: "120" }' in cm["data"]["silero_vad.pbtxt"]
    wait_for(lambda: cluster.pipeline(NS, "assistant")["status"].get("observedGeneration") == 2,
             what="observedGeneration 2")


def test_deleted_and_edited_children_are_restored(cluster, operator):
    cluster.apply(pipeline_doc("repair"))
    wait_for(lambda: all(all_children(cluster, "repair").values()), what="children")
    original = cluster.child("Deployment", NS, "repair-worker")

    cluster.delete_child("Service", NS, "repair")
    cluster.delete_child("PriorityClass", None, "speechops-interactive")
    cluster.edit_child("Deployment", NS, "repair-worker", {"spec": {"template": {"spec": {
        "priorityClassName": "someone-elses"}}}})
    cluster.edit_child("ConfigMap", NS, "repair-models", {"data": {"silero_vad.pbtxt": "garbage"}})

    wait_for(lambda: cluster.child("Service", NS, "repair"), what="service restored")
    wait_for(lambda: cluster.child("PriorityClass", None, "speechops-interactive"), what="priority class restored")
    wait_for(lambda: cluster.child("Deployment", NS, "repair-worker")["spec"]["template"]["spec"][
        "priorityClassName"] == original["spec"]["template"]["spec"]["priorityClassName"], what="worker repaired")
    wait_for(lambda: cluster.child("ConfigMap", NS, "repair-models")["data"]["silero_vad.pbtxt"] != "garbage",
             what="configmap repaired")


def test_restarted_operator_writes_nothing(cluster, operator):
    for i in range(3):
        cluster.apply(pipeline_doc(f"steady-{i}"))
    for i in range(3):
        wait_for(lambda i=i: all(all_children(cluster, f"steady-{i}").values()), what="children")
        cluster.mark_ready(NS, f"steady-{i}-worker")
        wait_for(lambda i=i: (c := condition(cluster, f"steady-{i}", "Ready")) and c["status"] == "True")
    operator.stop()
    before, seen = cluster.writes(), len(cluster.requests())
    operator.start()
    time.sleep(3)      # resume handlers and the initial child events have run
    operator.stop()
    assert cluster.writes()[len(before):] == []
    # It did look: the resumed reconciles read every worker.
    reads = {p for m, p, agent in cluster.requests()[seen:] if m == "GET" and agent == "speechops-operator"}
    assert {f"/apis/apps/v1/namespaces/{NS}/deployments/steady-{i}-worker" for i in range(3)} <= reads
    for i in range(3):
        worker = cluster.child("Deployment", NS, f"steady-{i}-worker")
        assert ANNOTATION_DESIRED_HASH in worker["metadata"]["annotations"]
    operator.start()


INVALID = [
    ({"capacity": {"minReplicas": 5, "maxReplicas": 2}}, "spec.capacity.minReplicas"),
    ({"stages": [{"name": "a", "model": "silero_vad", "dependsOn": ["b"]},
                 {"name": "b", "model": "whisper_asr", "dependsOn": ["a"]}]}, "dependency cycle: a -> b -> a"),
    ({"worker": {"resources": {"triton": {"requests": {"cpu": "lots"}}}}},
     "spec.worker.resources.triton.requests.cpu"),
]


def test_invalid_specs_get_a_condition_and_no_children_while_others_are_served(cluster, operator):
    # Rules only CEL (or nothing in the schema) catches: an API server without CEL lets them in.
    for i, (spec, _) in enumerate(INVALID):
        cluster.apply(pipeline_doc(f"bad-{i}", **copy.deepcopy(spec)), check_schema=False)
    cluster.apply(pipeline_doc("good"))
    wait_for(lambda: all(all_children(cluster, "good").values()), what="good pipeline's children")
    for i, (_, expected) in enumerate(INVALID):
        ready = wait_for(lambda i=i: condition(cluster, f"bad-{i}", "Ready"), what=f"bad-{i} condition")
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert expected in ready["message"]
        assert not any(all_children(cluster, f"bad-{i}").values())


def test_deletion_removes_children_and_unused_priority_classes(cluster, operator):
    cluster.apply(pipeline_doc("rt", profile="realtime"))
    cluster.apply(pipeline_doc("batch", profile="batch"))
    wait_for(lambda: all(all_children(cluster, "rt").values()) and all(all_children(cluster, "batch").values()))
    cluster.delete_pipeline(NS, "rt")
    wait_for(lambda: cluster.pipeline(NS, "rt") is None, what="pipeline gone")
    wait_for(lambda: not any(all_children(cluster, "rt").values()), what="children deleted")
    assert cluster.child("PriorityClass", None, "speechops-realtime") is None
    # The batch pipeline still uses these.
    assert cluster.child("PriorityClass", None, "speechops-batch") is not None
    assert cluster.child("PriorityClass", None, "speechops-reserve") is not None
    assert all(all_children(cluster, "batch").values())


def test_many_pipelines_at_once(cluster, operator):
    count = 12
    for i in range(count):
        cluster.apply(pipeline_doc(f"many-{i:02d}", profile=("realtime", "interactive", "batch")[i % 3]))
    for i in range(count):
        wait_for(lambda i=i: all(all_children(cluster, f"many-{i:02d}").values()), timeout=60,
                 what=f"children of many-{i:02d}")
        cluster.mark_ready(NS, f"many-{i:02d}-worker")
    for i in range(count):
        wait_for(lambda i=i: (c := condition(cluster, f"many-{i:02d}", "Ready")) and c["status"] == "True",
                 timeout=60, what=f"many-{i:02d} Ready")
