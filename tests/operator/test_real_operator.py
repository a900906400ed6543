"""The operator on a real API server, as the chart installs it: RBAC enforced (the
chart's ServiceAccount token), OwnerReferencesPermissionEnforcement on (OpenShift's
default), the controller manager making ReplicaSets and pods and collecting garbage, and
the chart's own PriorityClasses (labelled by Helm) present. Writes are counted from the
API server's audit log. One control plane and one operator process for the module.
"""

from __future__ import annotations

import datetime
import time

import pytest

from speechops_contract import names
from tests.envtest import ControlPlane, now
from tests.operator.realkit import (ADMIN_KEY_FILE, OPERATOR_USER, Kube, OperatorProcess, condition, install,
                                    pipeline, wait_for, writes_by_operator)

pytestmark = pytest.mark.slow
NS = "speech"
TICK = 15.0     # the scaler's timer


@pytest.fixture(scope="module")
def cp(envtest_assets):
    with ControlPlane(controller_manager=True, assets=envtest_assets,
                      admission_plugins=("OwnerReferencesPermissionEnforcement",)) as plane:
        yield plane


@pytest.fixture(scope="module")
def kube(cp):
    k = Kube(cp)
    k.namespace(NS)
    return k


@pytest.fixture(scope="module")
def operator(cp, kube, tmp_path_factory):
    kubeconfig = install(cp)
    op = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start()
    yield op
    op.stop()
    print("operator log (tail):\n" + "\n".join(op.text().splitlines()[-60:]))


def settled(kube: Kube, name: str) -> dict | None:
    body = kube.get(NS, name)
    status = (body or {}).get("status") or {}
    if body and status.get("observedGeneration") == body["metadata"]["generation"] and \
            condition(body, "ScalingActive"):
        return body
    return None


def quiet_since(cp, seconds: float) -> bool:
    """No write by the operator in the last `seconds`."""
    return not writes_by_operator(cp, now() - datetime.timedelta(seconds=seconds))


def describe(events) -> list:
    return sorted({(e.verb, e.resource, e.name, e.code) for e in events})


CPU_PIPELINE = {"worker": {"gpusPerPod": 0}, "capacity": {"streamsPerReplica": 8, "minReplicas": 2, "maxReplicas": 8},
                "scaling": {"mode": "reactive"}, "reserve": {"mode": "none"}}


def test_children_are_created_as_the_chart_service_account_with_owner_references_enforced(cp, kube, operator):
    since = now()
    kube.create(pipeline("owned", NS, CPU_PIPELINE))
    body = wait_for(lambda: settled(kube, "owned"), timeout=60, what="pipeline reconciled")
    children = kube.children(NS)
    wanted = {("ConfigMap", names.model_configmap("owned")), ("Deployment", names.worker_deployment("owned")),
              ("Service", names.service("owned")), ("PodDisruptionBudget", names.disruption_budget("owned"))}
    assert wanted <= set(children)
    for key in wanted:
        (ref,) = children[key]["metadata"]["ownerReferences"]
        assert ref["uid"] == body["metadata"]["uid"] and ref["blockOwnerDeletion"] and ref["controller"]
    refused = [e for e in writes_by_operator(cp, since) if e.code >= 400]
    assert not refused, describe(refused)
    # The controller manager made the pods: the Deployment -> ReplicaSet -> Pod chain works.
    wait_for(lambda: len(kube.core.list_namespaced_pod(NS, label_selector=f"{names.LABEL_PIPELINE}=owned").items)
             == 2, timeout=30, what="worker pods")


def test_workers_get_the_operators_public_key_and_keyless_streams_are_flagged(cp, kube, operator):
    from speechops.admin_signing import load
    from speechops_worker.gateway.admin_auth import read_public_keys
    kube.create(pipeline("keyless", NS, CPU_PIPELINE))
    kube.create(pipeline("keyed", NS, {**CPU_PIPELINE, "streams": {"auth": {"secretName": "keyed-api-keys"}}}))
    body = wait_for(lambda: settled(kube, "keyless"), timeout=60, what="keyless reconciled")
    keyed = wait_for(lambda: settled(kube, "keyed"), timeout=60, what="keyed reconciled")

    # The public half of the chart's Secret, as the gateway reads it from its mount.
    signer = load(str(operator.kubeconfig.with_name(ADMIN_KEY_FILE)))
    data = kube.core.read_namespaced_config_map(names.model_configmap("keyless"), NS).data
    published = operator.kubeconfig.with_name("published.pub")
    published.write_text(data[names.ADMIN_PUBLIC_KEY_ITEM])
    assert list(read_public_keys(published)) == [signer.key_id]
    pod = kube.apps.read_namespaced_deployment(names.worker_deployment("keyless"), NS).spec.template.spec
    volume = next(v for v in pod.volumes if v.name == "admin-key")
    assert volume.config_map.name == names.model_configmap("keyless") and volume.config_map.optional
    gateway = next(c for c in pod.containers if c.name == "gateway")
    env = {e.name: e.value for e in gateway.env}
    mount = next(m for m in gateway.volume_mounts if m.name == "admin-key")
    assert env[names.ENV_ADMIN_PUBLIC_KEYS] == f"{mount.mount_path}/{volume.config_map.items[0].path}"

    # No API keys: allowed (the quickstart streams so), said in a condition and one Warning.
    open_streams = condition(body, "StreamsAuthenticated")
    assert (open_streams["status"], open_streams["reason"]) == ("False", "NoApiKeys")
    assert "spec.streams.auth.secretName" in open_streams["message"]
    warned = wait_for(lambda: [e for e in kube.events(NS, "keyless") if e["reason"] == "NoApiKeys"],
                      timeout=30, what="a NoApiKeys Event")
    assert warned[0]["type"] == "Warning" and "spec.streams.auth.secretName" in warned[0]["message"]
    assert condition(keyed, "StreamsAuthenticated")["status"] == "True"
    assert not [e for e in kube.events(NS, "keyed") if e["reason"] == "NoApiKeys"]


def test_an_operator_with_a_new_key_republishes_it_at_start_and_the_workers_accept_it(cp, kube, operator, tmp_path):
    """The rotation (a replaced Secret, or an operator without a key file restarting): the
    new public key is in every pipeline's ConfigMap once the operator has resumed, and a
    gateway reading that ConfigMap accepts the new key's drains and refuses the old's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from speechops.admin_signing import load
    from speechops_worker.gateway.admin_auth import AdminAuth

    kube.create(pipeline("rotated", NS, CPU_PIPELINE))
    wait_for(lambda: settled(kube, "rotated"), timeout=60, what="rotated reconciled")
    old = load(str(operator.kubeconfig.with_name(ADMIN_KEY_FILE)))
    new_file = tmp_path / "new-admin-key.pem"
    new_file.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    new = load(str(new_file))

    def published() -> str:
        return kube.core.read_namespaced_config_map(names.model_configmap("rotated"), NS).data[
            names.ADMIN_PUBLIC_KEY_ITEM]

    assert published() == old.public_pem
    operator.stop()
    rotated = OperatorProcess(operator.kubeconfig, operator.log, {names.ENV_ADMIN_KEY_FILE: str(new_file)})
    started = time.monotonic()
    rotated.start()
    try:
        wait_for(lambda: published() == new.public_pem, timeout=60, what="the new key published")
        print(f"new admin key in the ConfigMap {time.monotonic() - started:.1f}s after the operator started")
        # What the kubelet then writes into the workers' mount.
        keys = tmp_path / names.ADMIN_PUBLIC_KEY_ITEM
        keys.write_text(published())
    finally:
        rotated.stop()
        operator.start()      # the module's operator, with the chart's key, for the tests after
    pod = "rotated-worker-abc-12345"
    auth = AdminAuth(keys, NS, pod)

    def verdict(signer):
        return auth.check("POST", "/drain", signer.authorization("POST", "/drain", NS, pod), unix_socket=False,
                          peer="10.244.0.9")

    assert verdict(new).allowed and verdict(old).reason == "unknown_key"
    # The module's operator republishes the chart's key as it resumes.
    wait_for(lambda: published() == old.public_pem, timeout=60, what="the chart's key back")


def test_the_charts_priority_classes_are_never_posted(cp, kube, operator):
    # The chart made speechops-interactive (labelled by Helm); pipelines use it.
    posts = [e for e in cp.audit_events(user=OPERATOR_USER) if e.resource == "priorityclasses"]
    assert not posts, describe(posts)
    pc = kube.api.sanitize_for_serialization(
        kube.client.SchedulingV1Api(kube.api).read_priority_class("speechops-interactive"))
    assert pc["metadata"]["labels"][names.LABEL_MANAGED_BY] == "Helm"


def test_a_failed_reconcile_sets_ready_false_and_a_warning_event(cp, kube, operator):
    # A namespace whose quota allows no ConfigMap: the reconcile's first create is refused.
    kube.namespace("full")
    kube.core.create_namespaced_resource_quota("full", {"metadata": {"name": "no-more"},
                                                        "spec": {"hard": {"count/configmaps": "0"}}})
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("no-more", "full").status.hard or {}),
             timeout=30, what="the quota in force")
    kube.create(pipeline("refused", "full", CPU_PIPELINE))
    ready = wait_for(lambda: (c := condition(kube.get("full", "refused"), "Ready")).get("reason")
                     == "ReconcileFailed" and c, timeout=60, what="Ready=False ReconcileFailed")
    assert ready["status"] == "False" and "exceeded quota" in ready["message"], ready
    assert "configmaps" in ready["message"]
    # kubectl get sp: the READY column is that condition's status.
    table = kube.table("/apis/speechops.dev/v1alpha1/namespaces/full/speechpipelines/refused")
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert table["rows"][0]["cells"][columns.index("Ready")] == "False"
    events = wait_for(lambda: [e for e in kube.events("full", "refused") if e["reason"] == "ReconcileFailed"],
                      timeout=30, what="a ReconcileFailed Event")
    assert events[0]["type"] == "Warning" and "exceeded quota" in events[0]["message"]
    # Retries do not repeat the Event (it counts one error, not one per retry).
    time.sleep(12)
    assert len([e for e in kube.events("full", "refused") if e["reason"] == "ReconcileFailed"]) == 1
    # The quota goes: the next retry succeeds and Ready reflects the workers again.
    kube.core.delete_namespaced_resource_quota("no-more", "full")
    wait_for(lambda: condition(kube.get("full", "refused"), "Ready").get("reason") not in (None, "ReconcileFailed"),
             timeout=60, what="Ready after the quota is gone")
    kube.delete("full", "refused")


INVALID = {"stages": [{"name": "a", "model": "silero_vad", "dependsOn": ["b"]},
                      {"name": "b", "model": "whisper_asr", "dependsOn": ["a"]}]}


def test_no_write_on_a_no_op_resync_or_a_restart(cp, kube, operator):
    kube.create(pipeline("steady", NS, CPU_PIPELINE))
    kube.create(pipeline("cyclic", NS, INVALID))
    wait_for(lambda: settled(kube, "steady"), timeout=60, what="steady reconciled")
    invalid = wait_for(lambda: condition(kube.get(NS, "cyclic"), "Ready").get("reason") == "InvalidSpec"
                       and kube.get(NS, "cyclic"), timeout=60, what="cyclic refused")
    assert "spec.stages" in condition(invalid, "Ready")["message"]
    assert "dependency cycle" in condition(invalid, "Ready")["message"]
    wait_for(lambda: quiet_since(cp, TICK + 2), timeout=90, what="the operator to settle")

    # A no-op resync: an unrelated label on each child makes the operator reconcile them all.
    since = now()
    for kind, name in kube.children(NS):
        if kind == "ConfigMap":
            kube.core.patch_namespaced_config_map(name, NS, {"metadata": {"labels": {"touched": "yes"}}})
        elif kind == "Service":
            kube.core.patch_namespaced_service(name, NS, {"metadata": {"labels": {"touched": "yes"}}})
    time.sleep(TICK + 3)   # and at least one scaler tick on every pipeline
    assert describe(writes_by_operator(cp, since)) == []

    # A restart: every pipeline is resumed and reconciled, nothing is written.
    operator.stop()
    since = now()
    operator.start()
    time.sleep(TICK + 5)
    assert describe(writes_by_operator(cp, since)) == []


def test_turning_the_reserve_on_creates_it_and_a_deleted_one_is_restored(cp, kube, operator):
    kube.create(pipeline("spare", NS, CPU_PIPELINE))
    wait_for(lambda: settled(kube, "spare"), timeout=60, what="spare reconciled")
    kube.patch(NS, "spare", {"spec": {"reserve": {"mode": "fixed", "count": 1}}})
    reserve = names.reserve_deployment("spare")
    wait_for(lambda: ("Deployment", reserve) in kube.children(NS), timeout=30, what="the reserve Deployment")
    wait_for(lambda: settled(kube, "spare"), timeout=60, what="spare reconciled again")
    kube.apps.delete_namespaced_deployment(reserve, NS)
    wait_for(lambda: any(e["reason"] == "Restored" for e in kube.events(NS, "spare")), timeout=30,
             what="a Restored Event")
    reasons = [(e["reason"], e["message"]) for e in kube.events(NS, "spare") if reserve in e["message"]]
    assert reasons.count(("Created", f"created Deployment {reserve}")) == 1, reasons
    assert reasons.count(("Restored", f"restored missing Deployment {reserve}")) == 1, reasons


def test_replicas_hold_through_a_rollout_whose_new_pods_are_not_ready(cp, kube, operator):
    worker = names.worker_deployment("roll")
    selector = f"{names.LABEL_PIPELINE}=roll"
    kube.create(pipeline("roll", NS, CPU_PIPELINE))
    wait_for(lambda: len(kube.core.list_namespaced_pod(NS, label_selector=selector).items) == 2, timeout=60,
             what="two worker pods")
    kube.set_pods_ready(NS, selector, True)
    wait_for(lambda: (kube.apps.read_namespaced_deployment(worker, NS).status.ready_replicas or 0) == 2,
             timeout=30, what="two ready workers")
    (old_hash,) = {p.metadata.labels["pod-template-hash"]
                   for p in kube.core.list_namespaced_pod(NS, label_selector=selector).items}
    # A spec change rolls the workers; the new pods wait (for a GPU node, say): never Ready.
    kube.patch(NS, "roll", {"spec": {"worker": {"resources": {"gateway": {"requests": {"cpu": "300m"}}}}}})
    wait_for(lambda: len({p.metadata.labels.get("pod-template-hash")
                          for p in kube.core.list_namespaced_pod(NS, label_selector=selector).items}) == 2,
             timeout=30, what="a surge pod of the new revision")
    seen = set()
    end = time.monotonic() + 3 * TICK + 3
    flip = True
    while time.monotonic() < end:
        # Old pods flap NotReady and back, new ones stay NotReady.
        kube.set_pods_ready(NS, selector, flip, only=lambda p: p["metadata"]["labels"]["pod-template-hash"] == old_hash)
        flip = not flip
        seen.add(kube.apps.read_namespaced_deployment(worker, NS).spec.replicas)
        time.sleep(4)
    assert seen == {2}, seen
    body = kube.get(NS, "roll")
    assert body["status"]["desiredReplicas"] == 2


def test_logs_say_each_decision_once(cp, kube, operator):
    lines = operator.lines()
    routine = [d["message"] for d in lines if d["level"] == "info" and d["message"].endswith("succeeded.")]
    assert not routine, routine[:5]
    # "steady" fell back (no Prometheus here) once, and the restart found it already said.
    scaler = [d for d in lines if d.get("pipeline") == f"{NS}/steady" and d.get("logger") == "kopf.objects"]
    assert len(scaler) == 1, scaler
    assert scaler[0]["condition"] == "PrometheusUnavailable"
    fallback = [e for e in kube.events(NS, "steady") if e["reason"] == "PrometheusUnavailable"]
    assert len(fallback) == 1 and fallback[0]["type"] == "Warning"
    assert "set spec.scaling.prometheusUrl" in fallback[0]["message"]


# ---- kill -9 ------------------------------------------------------------------------------

CHAOS = "chaos"
KILLS = 10


def chaos_spec(rng) -> dict:
    spec = {"worker": {"gpusPerPod": 0},
            "capacity": {"streamsPerReplica": rng.choice([4, 8, 16]), "minReplicas": 1, "maxReplicas": 4},
            "scaling": {"mode": "reactive"},
            "reserve": rng.choice([{"mode": "none"}, {"mode": "fixed", "count": 1}])}
    if rng.random() < 0.5:
        spec["worker"]["resources"] = {"gateway": {"requests": {"cpu": rng.choice(["200m", "300m"])}}}
    return spec


def converged(kube: Kube, admin_key: str) -> str | None:
    """None when every pipeline's children are exactly its desired state (with the
    operator's public key, `admin_key`) and nothing is left of deleted ones; else what is
    still wrong."""
    from speechops_contract import api as contract
    from speechops.cluster_defaults import apply_cluster_defaults
    from speechops.drift import needs_write
    from speechops.reconcile import adopt
    from speechops.resources.desired import desired_state

    live = kube.children(CHAOS)
    bodies = {p["metadata"]["name"]: p for p in kube.pipelines(CHAOS)}
    expected: dict[tuple[str, str], tuple[dict, dict]] = {}
    for name, body in bodies.items():
        if body["metadata"].get("deletionTimestamp"):
            return f"{name} still being deleted"
        if (body.get("status") or {}).get("observedGeneration") != body["metadata"]["generation"]:
            return f"{name} not reconciled at generation {body['metadata']['generation']}"
        state = desired_state(name, CHAOS, apply_cluster_defaults(contract.parse_spec(body["spec"])), admin_key)
        for child in state.children:
            expected[(child["kind"], child["metadata"]["name"])] = (adopt(child, body), body)
    for key, obj in live.items():
        if key not in expected:
            return f"orphan or unwanted {key}"
        desired, body = expected[key]
        refs = obj["metadata"].get("ownerReferences") or []
        if [r["uid"] for r in refs] != [body["metadata"]["uid"]]:
            return f"{key} owned by {refs}"
        if needs_write(desired, obj) is not None:
            return f"{key} differs from the desired state"
    missing = set(expected) - set(live)
    return f"missing {sorted(missing)}" if missing else None


def test_kill_9_at_random_points_converges_with_no_orphan_or_duplicate(cp, kube, operator):
    import random
    import threading

    rng = random.Random(22)
    kube.namespace(CHAOS)
    names_ = [f"p{i}" for i in range(6)]
    stop = threading.Event()
    errors: list[BaseException] = []
    done = {"create": 0, "patch": 0, "delete": 0}

    def churn() -> None:
        """Creates, changes and deletes pipelines while the operator dies and comes back."""
        try:
            while not stop.is_set():
                name = rng.choice(names_)
                body = kube.get(CHAOS, name)
                if body is None:
                    kube.create(pipeline(name, CHAOS, chaos_spec(rng)))
                    done["create"] += 1
                elif body["metadata"].get("deletionTimestamp"):
                    pass
                elif rng.random() < 0.25:
                    kube.delete(CHAOS, name)
                    done["delete"] += 1
                else:
                    kube.patch(CHAOS, name, {"spec": chaos_spec(rng)})
                    done["patch"] += 1
                time.sleep(rng.uniform(0.1, 0.6))
        except BaseException as exc:   # noqa: BLE001 - reported by the test
            errors.append(exc)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 4.0))     # at a random point: starting, reconciling, idle
            operator.kill9()
            operator.start(wait=False)
    finally:
        stop.set()
        worker.join(10)
    assert not errors, errors
    assert min(done.values()) >= 3, done
    wait_for(operator.alive, timeout=60, what="the operator after the last kill")
    # Every pipeline at its desired state, nothing orphaned or doubled (garbage collection
    # by ownerReferences, with the controller manager, takes what the operator left).
    last = {}

    from speechops.admin_signing import load
    admin_key = load(str(operator.kubeconfig.with_name(ADMIN_KEY_FILE))).public_pem

    def check():
        last["why"] = converged(kube, admin_key)
        return last["why"] is None
    try:
        wait_for(check, timeout=90, what="convergence", every=1.0)
    except AssertionError:
        raise AssertionError(f"not converged: {last['why']}") from None
    assert kube.pipelines(CHAOS)
    for p in kube.pipelines(CHAOS):
        deploy = kube.apps.read_namespaced_deployment(names.worker_deployment(p["metadata"]["name"]), CHAOS)
        assert deploy.metadata.owner_references[0].uid == p["metadata"]["uid"]
