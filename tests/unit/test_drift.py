"""When the reconciler writes a child, and what it sends."""

from __future__ import annotations

import pytest

from speechops_contract import api
from speechops.drift import ANNOTATION_DESIRED_HASH, is_subset, merge_patch, needs_write, with_hash
from speechops.resources.worker import worker_deployment


def live_of(desired, **server_added):
    """What an API server returns: our manifest plus what it adds."""
    live = with_hash(desired)
    live["metadata"].update(uid="u1", resourceVersion="7")
    live.setdefault("status", {}).update(server_added.get("status", {}))
    return live


@pytest.mark.parametrize("desired,live,expected", [
    pytest.param({"a": 1}, {"a": 1, "b": 2}, True, id="extra-live-keys-ignored"),
    pytest.param({"a": 1}, {"a": 2}, False, id="changed-scalar"),
    pytest.param({"cpu": "0.5"}, {"cpu": "500m"}, True, id="canonical-quantity"),
    pytest.param({"gpu": 1}, {"gpu": "1"}, True, id="int-quantity-as-string"),
    pytest.param({"memory": "1536Mi"}, {"memory": str(1536 * 2**20)}, True, id="binary-quantity"),
    pytest.param({"l": [{"x": 1}]}, {"l": [{"x": 1, "default": True}]}, True, id="list-items-with-defaults"),
    pytest.param({"l": [1, 2]}, {"l": [1]}, False, id="list-length"),
    pytest.param({"flag": True}, {"flag": 1}, False, id="bool-is-not-quantity"),
    # The API server drops an empty ConfigMap `data: {}`: stored as absent, still equal.
    pytest.param({"data": {}, "a": 1}, {"a": 1}, True, id="empty-map-is-absent"),
    pytest.param({"data": {"k": "v"}}, {}, False, id="non-empty-map-missing"),
])
def test_is_subset(desired, live, expected):
    assert is_subset(desired, live) is expected


def test_an_empty_field_the_server_dropped_is_no_patch():
    desired = {"kind": "ConfigMap", "metadata": {"name": "m"}, "data": {}}
    live = with_hash(desired)
    del live["data"]
    assert needs_write(desired, live) is None and merge_patch(desired, live) == {}


def deployment(**spec):
    return worker_deployment("p", "ns", api.parse_spec(spec))


def test_unchanged_child_needs_no_write_even_with_server_defaults_and_scaled_replicas():
    desired = deployment()
    live = live_of(desired)
    live["spec"]["replicas"] = 7                     # the scaler's
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a server default
    assert needs_write(desired, live) is None


@pytest.mark.parametrize("edit,why", [
    pytest.param(lambda live: live["spec"]["template"]["spec"].update(priorityClassName="x"), "drifted",
                 id="edited-by-hand"),
    pytest.param(lambda live: live["metadata"]["annotations"].pop(ANNOTATION_DESIRED_HASH), "spec changed",
                 id="no-hash"),
])
def test_edits_are_detected(edit, why):
    desired = deployment()
    live = live_of(desired)
    edit(live)
    assert needs_write(desired, live) == why


def test_removed_field_is_removed_and_replicas_left_alone():
    old = deployment(worker={"nodeSelector": {"pool": "gpu"}})
    new = deployment()
    live = live_of(old)
    live["spec"]["replicas"] = 5
    assert needs_write(new, live) == "spec changed"
    patch = merge_patch(new, live)
    assert patch["spec"]["template"]["spec"]["nodeSelector"] is None
    assert "replicas" not in patch["spec"]
    assert patch["metadata"]["annotations"][ANNOTATION_DESIRED_HASH] == with_hash(new)["metadata"]["annotations"][
        ANNOTATION_DESIRED_HASH]


def test_patch_touches_only_what_differs():
    desired = deployment()
    live = live_of(desired)
    live["spec"]["template"]["spec"]["priorityClassName"] = "x"
    live["metadata"]["labels"]["team"] = "theirs"     # labels others add stay
    patch = merge_patch(desired, live)
    assert patch == {"spec": {"template": {"spec": {"priorityClassName": "speechops-interactive"}}}}
